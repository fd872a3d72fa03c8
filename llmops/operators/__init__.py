"""The control plane: one kopf module per resource, thin handlers over pure builders."""
