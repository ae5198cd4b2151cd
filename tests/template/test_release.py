"""Gradual release with automatic rollback (issue 19), proven on the transformed template.

Every function publishes a version to its `live` alias through its own CodeDeploy
deployment group, whose alarms are real alarms of the template watching that function's
alias; and every way the function is triggered (API route permissions and integrations,
event source mappings, schedule targets) names the alias, so a canary's traffic split
applies to all of it. Iterates over what the template has: a function, route, queue or
schedule added later is covered without touching this file.

    infra/.venv/bin/python -m unittest discover -s tests/template -v
"""

from __future__ import annotations

import unittest

from template_support import of_type, refs, source, transformed

STRATEGY_DEFAULT = "Canary10Percent5Minutes"


def alias_of(template, function):
    aliases = [k for k, v in of_type(template, "AWS::Lambda::Alias").items()
               if v["Properties"]["FunctionName"] == {"Ref": function}]
    assert len(aliases) == 1, f"{function} has aliases {aliases}"
    return aliases[0]


class GradualRelease(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sam = source()
        cls.cfn = transformed()
        cls.functions = sorted(of_type(cls.sam, "AWS::Serverless::Function"))
        cls.alarms = set(of_type(cls.cfn, "AWS::CloudWatch::Alarm"))

    def test_there_are_functions_to_release(self):
        self.assertGreaterEqual(len(self.functions), 4)

    def test_each_function_has_a_live_alias_and_its_own_deployment_group(self):
        groups = of_type(self.cfn, "AWS::CodeDeploy::DeploymentGroup")
        self.assertEqual(len(groups), len(self.functions), sorted(groups))
        used = set()
        for function in self.functions:
            alias = alias_of(self.cfn, function)
            self.assertEqual(self.cfn["Resources"][alias]["Properties"]["Name"], "live")
            policy = self.cfn["Resources"][alias].get("UpdatePolicy", {}).get("CodeDeployLambdaAliasUpdate")
            self.assertIsNotNone(policy, f"{alias} is not updated through CodeDeploy")
            group = policy["DeploymentGroupName"]["Ref"]
            self.assertIn(group, groups)
            used.add(group)
        self.assertEqual(used, set(groups), "a deployment group per function, none shared")

    def test_the_strategy_parameter_chooses_the_deployment_config(self):
        for strategy, cfn in [(STRATEGY_DEFAULT, self.cfn), ("AllAtOnce", transformed(DeploymentStrategy="AllAtOnce"))]:
            for name, group in of_type(cfn, "AWS::CodeDeploy::DeploymentGroup").items():
                config = group["Properties"]["DeploymentConfigName"]
                self.assertEqual(
                    config, {"Fn::Sub": ["CodeDeployDefault.Lambda${ConfigName}", {"ConfigName": strategy}]},
                    f"{name} with DeploymentStrategy={strategy}")
        parameter = self.sam["Parameters"]["DeploymentStrategy"]
        self.assertEqual(parameter["Default"], STRATEGY_DEFAULT)
        self.assertIn("AllAtOnce", parameter["AllowedValues"])

    def test_every_rollback_alarm_is_a_real_alarm_of_the_template_and_watches_the_alias(self):
        for function in self.functions:
            alias = alias_of(self.cfn, function)
            group_name = self.cfn["Resources"][alias]["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"][
                "DeploymentGroupName"]["Ref"]
            group = self.cfn["Resources"][group_name]["Properties"]
            config = group["AlarmConfiguration"]
            self.assertTrue(config["Enabled"], group_name)
            self.assertIn("DEPLOYMENT_STOP_ON_ALARM", group["AutoRollbackConfiguration"]["Events"])
            names = [a["Name"] for a in config["Alarms"]]
            self.assertTrue(names, f"{function} releases with no alarm")
            for name in names:
                # CloudWatch takes an alarm that does not exist for OK: it would never roll back.
                self.assertIsInstance(name, dict, f"{function}: alarm {name!r} is not a Ref")
                self.assertIn(name.get("Ref"), self.alarms, f"{function}: {name} is not an alarm of the template")
            watches_alias = False
            for name in names:
                props = self.cfn["Resources"][name["Ref"]]["Properties"]
                dims = {d["Name"]: d["Value"] for d in props.get("Dimensions", [])}
                if (props.get("Namespace") == "AWS/Lambda" and dims.get("FunctionName") == {"Ref": function}
                        and dims.get("Resource") == {"Fn::Sub": f"${{{function}}}:live"}):
                    watches_alias = True
                    self.assertEqual(props["MetricName"], "Errors")
                    self.assertIn("ExecutedVersion", dims, "only the version being released counts")
            self.assertTrue(watches_alias, f"no rollback alarm of {function} watches its live alias's errors")

    def test_http_functions_also_roll_back_on_the_apis_5xx_and_the_worker_on_dlq_arrivals(self):
        def metrics_of(alarm):
            props = self.cfn["Resources"][alarm]["Properties"]
            if "MetricName" in props:
                return {(props["Namespace"], props["MetricName"])}
            return {(m["MetricStat"]["Metric"]["Namespace"], m["MetricStat"]["Metric"]["MetricName"])
                    for m in props.get("Metrics", []) if "MetricStat" in m}

        for function in self.functions:
            events = self.sam["Resources"][function]["Properties"].get("Events", {})
            alarms = [a["Ref"] for a in self.sam["Resources"][function]["Properties"]["DeploymentPreference"]["Alarms"]]
            watched = set().union(*(metrics_of(a) for a in alarms))
            kinds = {e["Type"] for e in events.values()}
            if "HttpApi" in kinds:
                self.assertIn(("AWS/ApiGateway", "5xx"), watched, function)
            if "SQS" in kinds:
                self.assertIn(("NanoBananaPro", "DlqArrivals"), watched, function)

    def test_every_lambda_permission_names_the_live_alias(self):
        permissions = of_type(self.cfn, "AWS::Lambda::Permission")
        self.assertTrue(permissions)
        aliases = set(of_type(self.cfn, "AWS::Lambda::Alias"))
        for name, permission in permissions.items():
            target = permission["Properties"]["FunctionName"]
            self.assertIn(target.get("Ref") if isinstance(target, dict) else target, aliases,
                          f"{name} lets {permission['Properties'].get('Principal')} invoke {target}, not an alias")

    def test_every_route_integration_invokes_the_live_alias(self):
        aliases = set(of_type(self.cfn, "AWS::Lambda::Alias"))
        routes = 0
        for api in of_type(self.cfn, "AWS::ApiGatewayV2::Api").values():
            for path, methods in api["Properties"]["Body"]["paths"].items():
                for method, operation in methods.items():
                    integration = operation.get("x-amazon-apigateway-integration")
                    if not integration:
                        continue
                    routes += 1
                    targets = refs(integration["uri"])
                    self.assertTrue(targets and targets <= aliases, f"{method.upper()} {path} invokes {targets}")
        sam_routes = sum(1 for f in self.functions
                         for e in self.sam["Resources"][f]["Properties"].get("Events", {}).values()
                         if e["Type"] == "HttpApi")
        self.assertEqual(routes, sam_routes, "every HttpApi event became an integration")

    def test_every_event_source_mapping_names_the_live_alias(self):
        mappings = of_type(self.cfn, "AWS::Lambda::EventSourceMapping")
        sqs_events = sum(1 for f in self.functions
                         for e in self.sam["Resources"][f]["Properties"].get("Events", {}).values()
                         if e["Type"] == "SQS")
        self.assertEqual(len(mappings), sqs_events)
        aliases = set(of_type(self.cfn, "AWS::Lambda::Alias"))
        for name, mapping in mappings.items():
            self.assertIn(mapping["Properties"]["FunctionName"].get("Ref"), aliases, name)

    def test_every_schedule_target_names_the_live_alias(self):
        rules = {**of_type(self.cfn, "AWS::Events::Rule"), **of_type(self.cfn, "AWS::Scheduler::Schedule")}
        schedules = sum(1 for f in self.functions
                        for e in self.sam["Resources"][f]["Properties"].get("Events", {}).values()
                        if e["Type"] in ("Schedule", "ScheduleV2"))
        self.assertEqual(len(rules), schedules)
        aliases = set(of_type(self.cfn, "AWS::Lambda::Alias"))
        for name, rule in rules.items():
            targets = rule["Properties"].get("Targets") or [rule["Properties"].get("Target")]
            for target in targets:
                self.assertIn(target["Arn"].get("Ref"), aliases, f"{name} targets {target['Arn']}")


if __name__ == "__main__":
    unittest.main()
