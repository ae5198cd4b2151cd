"""Releases the web app's build to its bucket so that an `index.html` a browser already
has never points at a missing file:

1. the hashed files under `assets/` first, cached for good (an existing one is the same
   file: its name is its hash, so it is left as it is);
2. `index.html` last, never cached;
3. assets the new `index.html` no longer uses are marked `superseded=true` by copying
   each onto itself with that tag: the copy starts its age now, and the bucket's lifecycle
   rule (template.yaml, `WebBucket`) expires tagged assets 30 days later. Current assets
   are never tagged, so they never expire;
4. with `--distribution-id`, CloudFront's cached `index.html` is invalidated.

Usage: release_web.py --bucket NAME [--dist web/dist] [--distribution-id ID]
(AWS credentials and region from the environment; `AWS_ENDPOINT_URL` is honoured.)
"""

from __future__ import annotations

import argparse
import mimetypes
import pathlib
import time

import boto3

IMMUTABLE = "public, max-age=31536000, immutable"
SUPERSEDED = ("superseded", "true")


def release(s3, bucket: str, dist: pathlib.Path, cloudfront=None, distribution_id=None) -> dict:
    index = dist / "index.html"
    if not index.is_file():
        raise SystemExit(f"{index} is missing: build the app first (infra/build-web.sh)")
    current = {
        str(path.relative_to(dist))
        for path in dist.rglob("*")
        if path.is_file() and path.name != "index.html"
    }
    existing = set(_keys(s3, bucket))
    uploaded = 0
    for key in sorted(current):
        if key.startswith("assets/") and key in existing:
            # The same hash is the same file. Current again (a release of an older build):
            # it must not expire, so its mark goes.
            if _is_superseded(s3, bucket, key):
                s3.delete_object_tagging(Bucket=bucket, Key=key)
            continue
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=(dist / key).read_bytes(),
            ContentType=_type(key),
            CacheControl=IMMUTABLE if key.startswith("assets/") else "no-cache",
        )
        uploaded += 1
    s3.put_object(
        Bucket=bucket,
        Key="index.html",
        Body=index.read_bytes(),
        ContentType="text/html; charset=utf-8",
        CacheControl="no-cache",
    )
    superseded = 0
    for key in sorted(existing - current - {"index.html"}):
        if not key.startswith("assets/") or _is_superseded(s3, bucket, key):
            continue
        # S3 refuses a copy onto itself that changes only tags: the metadata says when.
        head = s3.head_object(Bucket=bucket, Key=key)
        s3.copy_object(
            Bucket=bucket,
            Key=key,
            CopySource={"Bucket": bucket, "Key": key},
            TaggingDirective="REPLACE",
            Tagging=f"{SUPERSEDED[0]}={SUPERSEDED[1]}",
            MetadataDirective="REPLACE",
            Metadata={**head.get("Metadata", {}), "superseded-at": str(int(time.time()))},
            ContentType=head.get("ContentType", _type(key)),
            CacheControl=head.get("CacheControl", IMMUTABLE),
        )
        superseded += 1
    if cloudfront is not None and distribution_id:
        cloudfront.create_invalidation(
            DistributionId=distribution_id,
            InvalidationBatch={
                "Paths": {"Quantity": 1, "Items": ["/index.html"]},
                "CallerReference": f"release-{time.time_ns()}",
            },
        )
    return {"uploaded": uploaded, "superseded": superseded}


def _keys(s3, bucket: str):
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            yield item["Key"]


def _is_superseded(s3, bucket: str, key: str) -> bool:
    tags = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    return {"Key": SUPERSEDED[0], "Value": SUPERSEDED[1]} in tags


def _type(key: str) -> str:
    guessed, _ = mimetypes.guess_type(key)
    return guessed or "application/octet-stream"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--dist", default="web/dist", type=pathlib.Path)
    parser.add_argument("--distribution-id")
    args = parser.parse_args()
    cloudfront = boto3.client("cloudfront") if args.distribution_id else None
    done = release(boto3.client("s3"), args.bucket, args.dist, cloudfront, args.distribution_id)
    print(f"release_web: {done['uploaded']} files uploaded, index.html last, "
          f"{done['superseded']} old assets marked to expire in 30 days")


if __name__ == "__main__":
    main()
