"""The dashboard (issue 19) covers what the template has: every function in each of the
Lambda graphs, every queue, every alarm; and its body is a dashboard CloudFormation can
substitute. Iterates over the template, so a function, queue or alarm added later fails
here until it is on the dashboard. (Every metric of shared/src/metrics.rs being on it is
checked beside the catalog, in shared::metrics's tests.)"""

from __future__ import annotations

import json
import re
import unittest

from template_support import of_type, source, transformed

PSEUDO = {"AWS::Region", "AWS::AccountId", "AWS::StackName", "AWS::Partition", "AWS::URLSuffix"}


class Dashboard(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sam = source()
        dashboards = of_type(cls.sam, "AWS::CloudWatch::Dashboard")
        assert len(dashboards) == 1, sorted(dashboards)
        body = next(iter(dashboards.values()))["Properties"]["DashboardBody"]["Fn::Sub"]
        cls.text = body
        cls.body = json.loads(re.sub(r"\$\{[^}]+\}", "substituted", body))
        cls.widgets = cls.body["widgets"]

    def test_every_substitution_names_something_the_template_has(self):
        resources = self.sam["Resources"]
        for name in re.findall(r"\$\{([^}]+)\}", self.text):
            target = name.split(".")[0]
            self.assertTrue(name in PSEUDO or target in resources or target in self.sam["Parameters"], name)

    def test_the_transform_keeps_the_dashboard(self):
        self.assertEqual(len(of_type(transformed(), "AWS::CloudWatch::Dashboard")), 1)

    def test_widgets_fit_the_grid_without_overlapping(self):
        taken = set()
        for w in self.widgets:
            self.assertLessEqual(w["x"] + w["width"], 24, w["properties"].get("title"))
            for x in range(w["x"], w["x"] + w["width"]):
                for y in range(w["y"], w["y"] + w["height"]):
                    self.assertNotIn((x, y), taken, w["properties"].get("title"))
                    taken.add((x, y))

    def test_every_function_is_in_each_lambda_graph(self):
        functions = of_type(self.sam, "AWS::Serverless::Function")
        for title in ["Function errors", "Function throttles", "Function duration", "Function concurrency"]:
            [raw] = self.raw_widgets(title)
            for function in functions:
                self.assertTrue(f'"FunctionName", "${{{function}}}"' in raw, f"{function} is not in {title}")

    def raw_widgets(self, title_part):
        """The widgets' text before substitution, where ${Logical} references still show."""
        return [c for c in self.text.split('{"type": ')[1:] if f'"title": "{title_part}' in c]

    def test_every_queue_is_on_the_dashboard(self):
        for queue in of_type(self.sam, "AWS::SQS::Queue"):
            self.assertTrue(f"${{{queue}.QueueName}}" in self.text, f"{queue} has no graph")

    def test_every_alarm_is_in_the_alarm_widget(self):
        [widget] = [w for w in self.widgets if w["type"] == "alarm"]
        raw = next(c for c in self.text.split('{"type": ')[1:] if c.startswith('"alarm"'))
        alarms = of_type(self.sam, "AWS::CloudWatch::Alarm")
        self.assertEqual(len(widget["properties"]["alarms"]), len(alarms))
        for alarm in alarms:
            self.assertTrue(f"${{{alarm}.Arn}}" in raw, f"{alarm} is not on the dashboard")

    def test_the_business_and_technical_figures_the_issue_names_are_there(self):
        titles = " | ".join(w["properties"].get("title", "") for w in self.widgets)
        for part in ["Sign-ups", "Generations accepted", "succeeded", "failed", "success rate",
                     "Credits spent, granted, refunded, clawed back", "Purchases by product",
                     "renewals", "Route latency p50", "Route latency p99", "Provider latency p50 by model",
                     "Provider latency p99 by model", "Server errors", "Function errors", "throttles",
                     "duration", "concurrency", "oldest message age", "depth", "DLQ depth",
                     "DynamoDB throttles", "Cold starts", "Transaction conflict retries", "Alarms"]:
            self.assertIn(part, titles)


if __name__ == "__main__":
    unittest.main()
