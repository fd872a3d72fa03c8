//go:build tools

// Package tools pins the MinIO server, our local S3 endpoint.
package tools

import _ "github.com/minio/minio"
