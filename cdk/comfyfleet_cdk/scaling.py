"""The fleet's scaling policies: comfyfleet.autoscaling's rules as Auto Scaling and CloudWatch
resources. Target tracking on jobs waiting or running per node taking jobs, always; with
``min_nodes=0`` a step policy that starts one node from none when messages wait, and one that
takes the fleet to none after ``scale_in_idle_minutes`` without a visible message or a busy
node. The simulation (``comfyfleet sim --autoscale``) applies the same rules."""

from __future__ import annotations

from typing import TypeAlias

from aws_cdk import Duration
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from constructs import Construct

from comfyfleet import autoscaling as rules
from comfyfleet import observability as names
from comfyfleet.autoscaling import ScalingRules
from comfyfleet.domain import NodeStatus
from comfyfleet_cdk.functions import service_name

MINUTE = Duration.minutes(1)
_Query: TypeAlias = autoscaling.CfnScalingPolicy.TargetTrackingMetricDataQueryProperty


class FleetScaling(Construct):
    """``target_tracking`` always; ``from_zero`` and ``to_zero`` (step policies, each with
    its alarm) when the fleet may shrink to no node."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        scaling: ScalingRules,
        group: autoscaling.AutoScalingGroup,
        shared_queue_name: str,
        warmup_seconds: int,
    ) -> None:
        super().__init__(scope, id)
        self.rules, self.group = scaling, group
        self.queue_name = shared_queue_name
        self.target_tracking = self._track(warmup_seconds)
        self.from_zero: cw.Alarm | None = None
        self.to_zero: cw.Alarm | None = None
        if scaling.to_zero:
            self.from_zero = self._from_zero()
            self.to_zero = self._to_zero()

    def tracked_expression(self) -> str:
        """The target tracking metric's math (ScalingRules.tracked_metric, in CloudWatch's
        words): jobs waiting or running per node taking jobs; no such node reads as the
        target itself, so nothing moves."""
        floor = f" + {rules.FLOOR_PER_NODE}" if self.rules.to_zero else ""
        nodes = "FILL(idle, 0) + FILL(busy, 0)"
        return (
            f"IF({nodes} > 0, (FILL(backlog, 0) + FILL(busy, 0)) / ({nodes}){floor}, "
            f"{self.rules.jobs_per_node:g})"
        )

    def _track(self, warmup_seconds: int) -> autoscaling.CfnScalingPolicy:
        """Target tracking on (visible shared-queue messages + busy nodes) / (idle + busy
        nodes), the nodes by the reaper's count (one per GPU)."""
        metrics = autoscaling.CfnScalingPolicy.CustomizedMetricSpecificationProperty(
            metrics=[
                _query(
                    "backlog",
                    "AWS/SQS",
                    "ApproximateNumberOfMessagesVisible",
                    {"QueueName": self.queue_name},
                    "Sum",
                ),
                *(
                    _query(
                        status.value,
                        names.NAMESPACE,
                        names.NODES_BY_STATUS,
                        {"service": service_name("reaper"), names.STATUS: status.value},
                        "Maximum",
                    )
                    for status in (NodeStatus.IDLE, NodeStatus.BUSY)
                ),
                _Query(
                    id="jobs_per_node",
                    expression=self.tracked_expression(),
                    label="Jobs waiting or running per node taking jobs",
                    return_data=True,
                ),
            ]
        )
        return autoscaling.CfnScalingPolicy(
            self,
            "JobsPerNode",
            auto_scaling_group_name=self.group.auto_scaling_group_name,
            policy_type="TargetTrackingScaling",
            estimated_instance_warmup=warmup_seconds,
            target_tracking_configuration=autoscaling.CfnScalingPolicy.TargetTrackingConfigurationProperty(
                target_value=float(self.rules.jobs_per_node),
                customized_metric_specification=metrics,
            ),
        )

    def _visible(self) -> cw.Metric:
        return cw.Metric(
            namespace="AWS/SQS",
            metric_name="ApproximateNumberOfMessagesVisible",
            dimensions_map={"QueueName": self.queue_name},
            statistic="Maximum",
            period=MINUTE,
        )

    def _from_zero(self) -> cw.Alarm:
        """No node desired and messages visible: exactly one node (never fewer than asked)."""
        desired = cw.Metric(
            namespace="AWS/AutoScaling",
            metric_name="GroupDesiredCapacity",
            dimensions_map={"AutoScalingGroupName": self.group.auto_scaling_group_name},
            statistic="Maximum",
            period=MINUTE,
        )
        waiting = cw.MathExpression(
            expression="IF(FILL(desired, 0) == 0 AND FILL(visible, 0) > 0, 1, 0)",
            using_metrics={"desired": desired, "visible": self._visible()},
            period=MINUTE,
            label="Jobs waiting with no node",
        )
        return self._step(
            "FromZero",
            waiting,
            "Jobs wait and the fleet has no node: start one",
            comparison=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            threshold=1,
            minutes=rules.FROM_ZERO_MINUTES,
            capacity=1,
        )

    def _to_zero(self) -> cw.Alarm:
        """No visible message and no busy node for the idle minutes: no node at all."""
        busy = cw.Metric(
            namespace=names.NAMESPACE,
            metric_name=names.NODES_BY_STATUS,
            dimensions_map={"service": service_name("reaper"), names.STATUS: NodeStatus.BUSY.value},
            statistic="Maximum",
            period=MINUTE,
        )
        work = cw.MathExpression(
            expression="FILL(visible, 0) + FILL(busy, 0)",
            using_metrics={"visible": self._visible(), "busy": busy},
            period=MINUTE,
            label="Visible messages and busy nodes",
        )
        return self._step(
            "ToZero",
            work,
            f"No job for {self.rules.scale_in_idle_minutes} minutes: no node",
            comparison=cw.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD,
            threshold=0,
            minutes=self.rules.scale_in_idle_minutes,
            capacity=0,
        )

    def _step(
        self,
        id: str,
        metric: cw.IMetric,
        description: str,
        *,
        comparison: cw.ComparisonOperator,
        threshold: float,
        minutes: int,
        capacity: int,
    ) -> cw.Alarm:
        """An alarm whose every breach sets the group to ``capacity`` (ExactCapacity)."""
        action = autoscaling.StepScalingAction(
            self,
            f"{id}Action",
            auto_scaling_group=self.group,
            adjustment_type=autoscaling.AdjustmentType.EXACT_CAPACITY,
            metric_aggregation_type=autoscaling.MetricAggregationType.MAXIMUM,
        )
        above = comparison is cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        # Bounds are relative to the threshold: the whole breaching side is one step.
        if above:
            action.add_adjustment(adjustment=capacity, lower_bound=0)
        else:
            action.add_adjustment(adjustment=capacity, upper_bound=0)
        alarm = cw.Alarm(
            self,
            f"{id}Alarm",
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=minutes,
            datapoints_to_alarm=minutes,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cw_actions.AutoScalingAction(action))
        return alarm


def _query(id: str, namespace: str, name: str, dimensions: dict[str, str], stat: str) -> _Query:
    """One metric of a target tracking policy's math, not returned itself."""
    return _Query(
        id=id,
        return_data=False,
        metric_stat=autoscaling.CfnScalingPolicy.TargetTrackingMetricStatProperty(
            metric=autoscaling.CfnScalingPolicy.MetricProperty(
                namespace=namespace,
                metric_name=name,
                dimensions=[
                    autoscaling.CfnScalingPolicy.MetricDimensionProperty(name=key, value=value)
                    for key, value in dimensions.items()
                ],
            ),
            stat=stat,
        ),
    )
