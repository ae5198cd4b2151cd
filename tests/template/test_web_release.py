"""The web app's release (issue 19): hashed assets first, index.html last, assets the new
index.html no longer uses kept 30 days and then expired by the bucket's lifecycle rule, never
the current ones. The script runs against the emulator infra/test.sh started
(AWS_ENDPOINT_URL); the rule is read from the template."""

from __future__ import annotations

import os
import sys
import tempfile
import unittest
import uuid
from pathlib import Path

from template_support import ROOT, source

sys.path.insert(0, str(ROOT / "infra"))
import release_web  # noqa: E402


def build(root: Path, assets: dict[str, str]) -> Path:
    dist = root / f"dist-{uuid.uuid4().hex[:6]}"
    (dist / "assets").mkdir(parents=True)
    names = " ".join(assets)
    (dist / "index.html").write_text(f"<html><!-- {names} --></html>")
    for name, body in assets.items():
        (dist / "assets" / name).write_text(body)
    return dist


@unittest.skipUnless(os.environ.get("AWS_ENDPOINT_URL"), "needs the emulator (infra/test.sh)")
class Release(unittest.TestCase):
    def setUp(self):
        import boto3

        self.s3 = boto3.client("s3", region_name="us-east-1")
        self.bucket = f"web-release-{uuid.uuid4().hex[:10]}"
        self.s3.create_bucket(Bucket=self.bucket)
        self.tmp = tempfile.TemporaryDirectory()
        self.root = Path(self.tmp.name)
        self.puts = []
        self.s3.meta.events.register(
            "provide-client-params.s3.PutObject", lambda params, **_: self.puts.append(params["Key"])
        )

    def tearDown(self):
        self.tmp.cleanup()

    def tags(self, key):
        return self.s3.get_object_tagging(Bucket=self.bucket, Key=key)["TagSet"]

    def test_assets_go_first_and_index_html_last_each_cached_as_it_must_be(self):
        dist = build(self.root, {"app-1a2b.js": "one", "app-3c4d.css": "two"})

        release_web.release(self.s3, self.bucket, dist)

        self.assertEqual(self.puts[-1], "index.html")
        self.assertEqual(sorted(self.puts[:-1]), ["assets/app-1a2b.js", "assets/app-3c4d.css"])
        index = self.s3.head_object(Bucket=self.bucket, Key="index.html")
        asset = self.s3.head_object(Bucket=self.bucket, Key="assets/app-1a2b.js")
        self.assertEqual(index["CacheControl"], "no-cache")
        self.assertEqual(asset["CacheControl"], "public, max-age=31536000, immutable")

    def test_a_new_release_keeps_the_old_assets_marked_to_expire_and_never_marks_current_ones(self):
        first = build(self.root, {"app-old.js": "old", "vendor-same.js": "same"})
        second = build(self.root, {"app-new.js": "new", "vendor-same.js": "same"})
        release_web.release(self.s3, self.bucket, first)
        self.puts.clear()

        done = release_web.release(self.s3, self.bucket, second)
        again = release_web.release(self.s3, self.bucket, second)

        keys = {o["Key"] for o in self.s3.list_objects_v2(Bucket=self.bucket)["Contents"]}
        self.assertIn("assets/app-old.js", keys, "an old index.html still finds its asset")
        self.assertEqual(self.tags("assets/app-old.js"), [{"Key": "superseded", "Value": "true"}])
        old = self.s3.head_object(Bucket=self.bucket, Key="assets/app-old.js")
        self.assertEqual(old["CacheControl"], "public, max-age=31536000, immutable")
        self.assertEqual(self.tags("assets/app-new.js"), [])
        self.assertEqual(self.tags("assets/vendor-same.js"), [], "a current asset is never marked")
        self.assertNotIn("assets/vendor-same.js", self.puts, "an unchanged hash is not uploaded")
        self.assertEqual(done["superseded"], 1)
        self.assertEqual(again["superseded"], 0, "an asset is marked once")


    def test_an_asset_current_again_after_a_rollback_loses_its_mark(self):
        old = build(self.root, {"app-old.js": "old"})
        new = build(self.root, {"app-new.js": "new"})
        release_web.release(self.s3, self.bucket, old)
        release_web.release(self.s3, self.bucket, new)

        release_web.release(self.s3, self.bucket, old)

        self.assertEqual(self.tags("assets/app-old.js"), [], "current again: never expires")
        self.assertEqual(self.tags("assets/app-new.js"), [{"Key": "superseded", "Value": "true"}])


class LifecycleRule(unittest.TestCase):
    def test_the_web_bucket_expires_only_superseded_assets_after_30_days(self):
        rules = source()["Resources"]["WebBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]

        self.assertEqual(len(rules), 1)
        rule = rules[0]
        self.assertEqual(rule["Status"], "Enabled")
        self.assertEqual(rule["Prefix"], "assets/")
        self.assertEqual(rule["TagFilters"], [{"Key": "superseded", "Value": "true"}])
        self.assertEqual(rule["ExpirationInDays"], 30)


if __name__ == "__main__":
    unittest.main()
