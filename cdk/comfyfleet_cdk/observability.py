"""Observability: one CloudWatch dashboard of the whole system and the alarms that page.

Business metrics are the names comfyfleet.observability defines (what the code emits).
Their emitters add dimensions (Powertools' ``service``, a ``reason``, a ``result``), so
graphs sum SEARCH expressions over whatever dimension sets exist; alarms, which cannot
use SEARCH, name the exact series.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from comfyfleet import observability as names
from comfyfleet.delivery import Outcome
from comfyfleet.domain import NodeStatus
from comfyfleet_cdk.config import DeploymentConfig
from comfyfleet_cdk.functions import service_name
from comfyfleet_cdk.queues import Queues

MINUTE = Duration.minutes(1)
FIVE_MINUTES = Duration.minutes(5)
# Alarm thresholds (operators tune them with the dashboard in front of them).
OLDEST_MESSAGE_SECONDS = 15 * 60
SERVER_ERROR_RATE = 0.05
WIDTH = 8


def search(metric: str, stat: str, period: Duration = MINUTE) -> str:
    """Every series of a comfyfleet metric, whatever its dimensions: no metric schema (it
    would pin the dimension set), the namespace as a search term, the name exactly."""
    return (
        f"SEARCH('{names.NAMESPACE} MetricName=\"{metric}\"', '{stat}', {int(period.to_seconds())})"
    )


def total(metric: str, label: str, stat: str = "Sum") -> cw.MathExpression:
    """The sum of all series of a comfyfleet metric per minute."""
    return cw.MathExpression(expression=f"SUM({search(metric, stat)})", label=label, period=MINUTE)


def each(metric: str, stat: str, label: str) -> cw.MathExpression:
    """Each series of a comfyfleet metric (by dimension) as its own line."""
    return cw.MathExpression(expression=search(metric, stat), label=label, period=MINUTE)


class Observability(Construct):
    """The dashboard, the alarm topic (with its e-mail subscription) and the alarms."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: DeploymentConfig,
        queues: Queues,
        rest_api: apigw.RestApi | None,
        functions: dict[str, lambda_.IFunction],
        fleet: autoscaling.AutoScalingGroup,
    ) -> None:
        super().__init__(scope, id)
        self.config = config
        prefix = config.settings.prefix
        self.alarm_topic = sns.Topic(
            self,
            "AlarmTopic",
            topic_name=f"{prefix}-alarms",
            master_key=queues.topic_key,
            enforce_ssl=True,
        )
        if config.alarm_email:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))

        self.dashboard = cw.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{prefix}-{Stack.of(self).region}",
            default_interval=Duration.hours(3),
        )
        graphs: list[cw.IWidget] = []
        if rest_api is not None:
            graphs += self._api_widgets(rest_api)
        graphs += self._function_widgets(functions)
        graphs += self._queue_widgets(queues)
        graphs += self._job_widgets()
        graphs += self._fleet_widgets(fleet)
        for start in range(0, len(graphs), 3):
            self.dashboard.add_widgets(*graphs[start : start + 3])

        self.alarms: list[cw.Alarm] = []
        self._alarms(queues, rest_api, fleet)

    # -- dashboard ----------------------------------------------------------------------------

    def _graph(self, title: str, left: list[cw.IMetric], **options: Any) -> cw.GraphWidget:
        return cw.GraphWidget(title=title, left=left, width=WIDTH, height=6, **options)

    def _api_widgets(self, api: apigw.RestApi) -> list[cw.IWidget]:
        return [
            self._graph("API requests", [api.metric_count(period=MINUTE, statistic="Sum")]),
            self._graph(
                "API latency (ms)",
                [
                    api.metric_latency(period=MINUTE, statistic="p50", label="p50"),
                    api.metric_latency(period=MINUTE, statistic="p95", label="p95"),
                    api.metric_integration_latency(period=MINUTE, statistic="p95", label="λ p95"),
                ],
            ),
            self._graph(
                "API 4xx / 5xx",
                [
                    api.metric_client_error(period=MINUTE, statistic="Sum", label="4xx"),
                    api.metric_server_error(period=MINUTE, statistic="Sum", label="5xx"),
                ],
            ),
        ]

    def _function_widgets(self, functions: dict[str, lambda_.IFunction]) -> list[cw.IWidget]:
        ordered = sorted(functions.items())
        return [
            self._graph(
                "Function errors",
                [fn.metric_errors(period=MINUTE, label=name) for name, fn in ordered],
            ),
            self._graph(
                "Function throttles",
                [fn.metric_throttles(period=MINUTE, label=name) for name, fn in ordered],
            ),
            self._graph(
                "Function duration p95 (ms)",
                [
                    fn.metric_duration(period=MINUTE, statistic="p95", label=name)
                    for name, fn in ordered
                ],
            ),
        ]

    def _queue_widgets(self, queues: Queues) -> list[cw.IWidget]:
        main = [queues.shared, queues.webhooks]
        # Node queues come and go with the nodes: a partial match on the name finds them.
        node_queues = (
            "SEARCH('{AWS/SQS,QueueName} MetricName=\"%s\" QueueName=node', 'Maximum', 60)"
        )
        return [
            self._graph(
                "Queue depth (visible messages)",
                [
                    *(q.metric_approximate_number_of_messages_visible(period=MINUTE) for q in main),
                    cw.MathExpression(
                        expression=node_queues % "ApproximateNumberOfMessagesVisible",
                        label="node queues",
                        period=MINUTE,
                    ),
                ],
            ),
            self._graph(
                "Oldest message age (s)",
                [
                    *(
                        q.metric_approximate_age_of_oldest_message(
                            period=MINUTE, statistic="Maximum"
                        )
                        for q in main
                    ),
                    cw.MathExpression(
                        expression=node_queues % "ApproximateAgeOfOldestMessage",
                        label="node queues",
                        period=MINUTE,
                    ),
                ],
            ),
            self._graph(
                "Dead-letter queue depth",
                [
                    q.metric_approximate_number_of_messages_visible(period=MINUTE, label=name)
                    for name, q in sorted(queues.dead_letter_queues.items())
                ],
            ),
        ]

    def _job_widgets(self) -> list[cw.IWidget]:
        hits = total(names.MODEL_CACHE_HITS, "hits")
        misses = total(names.MODEL_CACHE_MISSES, "misses")
        return [
            self._graph(
                "Jobs per minute",
                [
                    total(names.JOBS_SUBMITTED, "submitted"),
                    total(names.JOBS_COMPLETED, "completed"),
                    total(names.JOBS_FAILED, "failed"),
                    total(names.JOBS_CANCELLED, "cancelled"),
                    total(names.JOBS_REJECTED, "rejected"),
                ],
            ),
            self._graph(
                "Queue wait and execution (ms)",
                [
                    each(names.QUEUE_WAIT, "p50", "queue wait p50"),
                    each(names.QUEUE_WAIT, "p95", "queue wait p95"),
                    each(names.EXECUTION_TIME, "p50", "execution p50"),
                    each(names.EXECUTION_TIME, "p95", "execution p95"),
                ],
            ),
            self._graph(
                "Model cache hit rate (%)",
                [
                    cw.MathExpression(
                        expression="100 * hits / (hits + misses)",
                        using_metrics={"hits": hits, "misses": misses},
                        label="hit rate",
                        period=MINUTE,
                    )
                ],
                left_y_axis=cw.YAxisProps(min=0, max=100),
            ),
            self._graph(
                "Model downloads",
                [total(names.MODEL_BYTES_DOWNLOADED, "bytes")],
                right=[total(names.MODEL_DOWNLOAD_SECONDS, "seconds")],
            ),
            self._graph(
                "Webhook deliveries by result",
                [each(names.WEBHOOK_DELIVERIES, "Sum", "deliveries")],
            ),
            self._graph(
                "Nodes by status",
                [each(names.NODES_BY_STATUS, "Maximum", "nodes")],
            ),
        ]

    def _fleet_widgets(self, fleet: autoscaling.AutoScalingGroup) -> list[cw.IWidget]:
        def group(metric: str) -> cw.Metric:
            return cw.Metric(
                namespace="AWS/AutoScaling",
                metric_name=metric,
                dimensions_map={"AutoScalingGroupName": fleet.auto_scaling_group_name},
                statistic="Maximum",
                period=MINUTE,
            )

        return [
            self._graph(
                "Instances in service",
                [group("GroupInServiceInstances"), group("GroupDesiredCapacity")],
            )
        ]

    # -- alarms -------------------------------------------------------------------------------

    def _alarm(
        self,
        id: str,
        description: str,
        metric: cw.Metric | cw.MathExpression,
        **options: Any,
    ) -> None:
        alarm = metric.create_alarm(self, id, alarm_description=description, **options)
        alarm.add_alarm_action(cw_actions.SnsAction(self.alarm_topic))
        alarm.add_ok_action(cw_actions.SnsAction(self.alarm_topic))
        self.alarms.append(alarm)

    def _alarms(
        self,
        queues: Queues,
        api: apigw.RestApi | None,
        fleet: autoscaling.AutoScalingGroup,
    ) -> None:
        self._queue_alarms(queues)
        if api is not None:
            self._api_alarms(api)
        self._webhook_alarms()
        self._fleet_alarms(queues)

    def _queue_alarms(self, queues: Queues) -> None:
        """Any dead letter, and a message left waiting too long on a queue."""
        above = cw.ComparisonOperator.GREATER_THAN_THRESHOLD
        for name, dlq in sorted(queues.dead_letter_queues.items()):
            self._alarm(
                f"DeadLetters{name.title().replace('-', '')}",
                f"Messages in {dlq.queue_name}: jobs or webhooks that could not be processed",
                dlq.metric_approximate_number_of_messages_visible(
                    period=MINUTE, statistic="Maximum"
                ),
                threshold=0,
                comparison_operator=above,
                evaluation_periods=1,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
        for id, queue in (("Shared", queues.shared), ("Webhooks", queues.webhooks)):
            self._alarm(
                f"OldestMessage{id}",
                f"A message has waited over {OLDEST_MESSAGE_SECONDS} s in {queue.queue_name}",
                queue.metric_approximate_age_of_oldest_message(period=MINUTE, statistic="Maximum"),
                threshold=OLDEST_MESSAGE_SECONDS,
                comparison_operator=above,
                evaluation_periods=5,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )

    def _api_alarms(self, api: apigw.RestApi) -> None:
        """Too large a share of API requests answered 5xx."""
        self._alarm(
            "ServerErrorRate",
            f"Over {SERVER_ERROR_RATE:.0%} of API requests answered 5xx",
            cw.MathExpression(
                expression="IF(requests > 0, errors / requests, 0)",
                using_metrics={
                    "errors": api.metric_server_error(period=FIVE_MINUTES, statistic="Sum"),
                    "requests": api.metric_count(period=FIVE_MINUTES, statistic="Sum"),
                },
                period=FIVE_MINUTES,
            ),
            threshold=SERVER_ERROR_RATE,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=2,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )

    def _webhook_alarms(self) -> None:
        """A webhook given up on (by the webhooks function's own count)."""
        self._alarm(
            "WebhookFailures",
            "Webhook deliveries failed for good (their last attempt; moved to the webhooks DLQ)",
            cw.Metric(
                namespace=names.NAMESPACE,
                metric_name=names.WEBHOOK_DELIVERIES,
                dimensions_map={
                    "service": service_name("webhooks"),
                    names.RESULT: Outcome.GAVE_UP.value,
                },
                statistic="Sum",
                period=FIVE_MINUTES,
            ),
            threshold=0,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )

    def _fleet_alarms(self, queues: Queues) -> None:
        """No node that takes jobs, by the reaper's count of nodes by status. A fleet that
        may shrink to none is in trouble only when jobs wait meanwhile."""
        healthy = {
            status: cw.Metric(
                namespace=names.NAMESPACE,
                metric_name=names.NODES_BY_STATUS,
                dimensions_map={"service": service_name("reaper"), names.STATUS: status},
                statistic="Maximum",
                period=FIVE_MINUTES,
            )
            for status in (s.value for s in NodeStatus if s.takes_jobs)
        }
        expression = " + ".join(f"FILL({s}, 0)" for s in healthy)
        using: dict[str, cw.IMetric] = dict(healthy)
        description = (
            "No GPU node takes jobs (none idle or busy, by the reaper's count): nothing runs"
        )
        if self.config.min_nodes == 0:
            using["waiting"] = queues.shared.metric_approximate_number_of_messages_visible(
                period=FIVE_MINUTES, statistic="Minimum"
            )
            expression = f"IF(FILL(waiting, 0) > 0, {expression}, 1)"
            description = "Jobs wait and no GPU node takes them (none idle or busy): nothing runs"
        self._alarm(
            "NoHealthyNode",
            description,
            cw.MathExpression(expression=expression, using_metrics=using, period=FIVE_MINUTES),
            threshold=1,
            comparison_operator=cw.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=3,
            treat_missing_data=cw.TreatMissingData.BREACHING,
        )
