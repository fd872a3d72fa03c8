"""The training workload: runs inside a Ray job, one module per stage.

    python -m llmops.training.run --config <TrainingRun.encode()>

Stages (each skips itself when its output is already in the work folder, so a retried job resumes):
ingest -> prepare (Ray Data) -> train (Ray Train) -> evaluate -> register. The pure pieces (text
clean-up, PII, MinHash, metrics, gates, suites) import nothing heavy and carry their own unit tests.
"""
