"""Observability: the dashboard plots the metric names the code emits; alarms page."""

from __future__ import annotations

from comfyfleet import observability
from comfyfleet.delivery import Outcome
from tests.infra.conftest import Synthesised, flatten, logical_id

BUSINESS_METRICS = (
    observability.JOBS_SUBMITTED,
    observability.JOBS_REJECTED,
    observability.JOBS_COMPLETED,
    observability.JOBS_FAILED,
    observability.JOBS_CANCELLED,
    observability.QUEUE_WAIT,
    observability.EXECUTION_TIME,
    observability.MODEL_CACHE_HITS,
    observability.MODEL_CACHE_MISSES,
    observability.MODEL_BYTES_DOWNLOADED,
    observability.MODEL_DOWNLOAD_SECONDS,
    observability.WEBHOOK_DELIVERIES,
    observability.NODES_BY_STATUS,
)
WIDGETS = (
    "API requests",
    "API latency (ms)",
    "API 4xx / 5xx",
    "Function errors",
    "Function throttles",
    "Function duration p95 (ms)",
    "Queue depth (visible messages)",
    "Oldest message age (s)",
    "Dead-letter queue depth",
    "Jobs per minute",
    "Queue wait and execution (ms)",
    "Model cache hit rate (%)",
    "Model downloads",
    "Webhook deliveries by result",
    "Nodes by status",
    "Instances in service",
)


def _dashboard(synthesised: Synthesised) -> str:
    (dashboard,) = synthesised.resources("AWS::CloudWatch::Dashboard").values()
    return flatten(dashboard["Properties"]["DashboardBody"])


def test_dashboard_has_every_widget(synthesised: Synthesised) -> None:
    body = _dashboard(synthesised)
    for title in WIDGETS:
        assert f'"title":"{title}"' in body, title


def test_dashboard_plots_the_metric_names_comfyfleet_emits(synthesised: Synthesised) -> None:
    body = _dashboard(synthesised)
    for name in BUSINESS_METRICS:
        # the name exactly (its quotes escaped in the body's JSON)
        search = f"SEARCH('{observability.NAMESPACE} MetricName=\\\"{name}\\\"'"
        assert search in body, name


def test_dashboard_covers_lambda_api_sqs_and_the_group(synthesised: Synthesised) -> None:
    body = _dashboard(synthesised)
    for namespace in ("AWS/ApiGateway", "AWS/Lambda", "AWS/SQS", "AWS/AutoScaling"):
        assert f'"{namespace}"' in body, namespace
    assert "ApproximateAgeOfOldestMessage" in body
    assert "GroupInServiceInstances" in body


def test_alarms_page_the_alarm_topic(synthesised: Synthesised) -> None:
    topic = logical_id(synthesised, synthesised.stack.observability.alarm_topic)
    alarms = synthesised.resources("AWS::CloudWatch::Alarm")
    assert len(alarms) == 7
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic}]
    synthesised.template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ops@example.com"}
    )


def _alarm(synthesised: Synthesised, needle: str) -> dict:
    found = [
        a["Properties"]
        for a in synthesised.resources("AWS::CloudWatch::Alarm").values()
        if needle in flatten(a["Properties"]["AlarmDescription"])
    ]
    assert len(found) >= 1, needle
    return found[0]


def test_dead_letters_alarm_on_the_first_message(synthesised: Synthesised) -> None:
    queues = synthesised.stack.queues
    for dlq in queues.dead_letter_queues.values():
        alarm = next(
            a["Properties"]
            for a in synthesised.resources("AWS::CloudWatch::Alarm").values()
            if a["Properties"].get("Dimensions")
            == [
                {
                    "Name": "QueueName",
                    "Value": {"Fn::GetAtt": [logical_id(synthesised, dlq), "QueueName"]},
                }
            ]
        )
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert alarm["Threshold"] == 0
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"


def test_oldest_message_5xx_webhook_and_node_health_alarms(synthesised: Synthesised) -> None:
    oldest = _alarm(synthesised, "has waited over")
    assert oldest["MetricName"] == "ApproximateAgeOfOldestMessage"
    errors = _alarm(synthesised, "answered 5xx")
    assert "errors / requests" in flatten(errors["Metrics"])
    webhook = _alarm(synthesised, "Webhook deliveries failed")
    assert webhook["MetricName"] == observability.WEBHOOK_DELIVERIES
    assert {"Name": observability.RESULT, "Value": Outcome.GAVE_UP.value} in webhook["Dimensions"]
    assert {"Name": "service", "Value": "comfyfleet-webhooks"} in webhook["Dimensions"]
    nodes = _alarm(synthesised, "No GPU node")
    assert nodes["ComparisonOperator"] == "LessThanThreshold"
    assert nodes["TreatMissingData"] == "breaching"
    assert observability.NODES_BY_STATUS in flatten(nodes["Metrics"])
