"""What `llmops watch trainingjob` prints: progress lines and the final summary."""

from llmops.api.trainingjob import TrainingJobStatus
from llmops.watch import progress_line, summary


def test_progress_line_shows_what_a_person_needs() -> None:
    status = TrainingJobStatus.model_validate(
        {
            "phase": "Running",
            "progress": {
                "stage": "Training",
                "step": 12,
                "totalSteps": 40,
                "percent": 30,
                "epoch": 0.5,
                "loss": 3.21,
                "tokensPerSecond": 1234.5,
                "etaSeconds": 20,
            },
        }
    )
    line = progress_line(status)
    for part in (
        "Running",
        "stage Training",
        "step 12/40 (30%)",
        "epoch 0.50",
        "loss 3.2100",
        "1,234 tok/s",
        "ETA 20s",
    ):
        assert part in line


def test_summary_lists_metrics_gates_and_the_version() -> None:
    status = TrainingJobStatus.model_validate(
        {
            "phase": "Succeeded",
            "evaluation": {"perplexity": 12.5},
            "gates": [
                {"metric": "perplexity", "operator": "<", "threshold": 50, "value": 12.5, "passed": True},
                {"metric": "security/leakage", "operator": "<=", "threshold": 0, "passed": False},
                {
                    "metric": "perplexity",
                    "compare": "ratio",
                    "operator": "<=",
                    "threshold": 1.03,
                    "value": 12.5,
                    "baselineValue": 12.0,
                    "compared": 1.0417,
                    "passed": False,
                },
            ],
            "modelVersion": {"name": "tiny", "version": "3", "uri": "s3://llmops/models/tiny/versions/3"},
        }
    )
    text = summary(status)
    assert "perplexity" in text and "12.5000" in text
    assert "PASS  perplexity < 50.0" in text and "FAIL  security/leakage <= 0.0  (measured missing)" in text
    assert "FAIL  perplexity ratio <= 1.03  (ratio 1.0417; measured 12.5000, baseline 12.0000)" in text
    assert "model version: tiny:3" in text
