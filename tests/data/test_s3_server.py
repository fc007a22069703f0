"""The local S3 server the S3 tests run against: real S3 semantics, isolation, outages."""
import os

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError, EndpointConnectionError

from tests.objectstore import CONFLICTING_ENV, CREDENTIALS, ObjectStore


def env_client():
    """A client configured only from the environment, as streaming and data_prep make theirs."""
    return boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])


def test_session_env_reaches_the_server(s3_server):
    assert os.environ["S3_ENDPOINT_URL"] == s3_server.endpoint
    bucket = s3_server.make_bucket()
    env_client().put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello world")
    got = s3_server.client().get_object(Bucket=bucket, Key="a/b.txt", Range="bytes=6-10")
    assert got["Body"].read() == b"world"
    assert s3_server.keys(bucket) == ["a/b.txt"]


def test_make_bucket_gives_new_empty_buckets(s3_server):
    first, second = s3_server.make_bucket(), s3_server.make_bucket()
    assert first != second
    s3_server.client().put_object(Bucket=first, Key="x", Body=b"1")
    assert s3_server.keys(second) == []
    with pytest.raises(ClientError, match="NoSuchKey"):
        s3_server.client().get_object(Bucket=second, Key="x")


def test_multipart_upload_round_trips(s3_server, tmp_path):
    bucket = s3_server.make_bucket()
    data = os.urandom(11 << 20)  # three parts of at most 5 MiB (S3's minimum part size)
    (tmp_path / "big").write_bytes(data)
    five_mib = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    env_client().upload_file(str(tmp_path / "big"), bucket, "big", Config=five_mib)
    head = s3_server.client().head_object(Bucket=bucket, Key="big")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-3"')  # a multipart ETag
    assert s3_server.client().get_object(Bucket=bucket, Key="big")["Body"].read() == data


def test_outage_refuses_requests_and_restart_keeps_data(s3_outage):
    bucket = s3_outage.make_bucket()
    s3_outage.client().put_object(Bucket=bucket, Key="kept", Body=b"still here")
    endpoint = s3_outage.endpoint

    s3_outage.stop()
    assert not s3_outage.is_up()
    with pytest.raises(EndpointConnectionError):
        env_client().get_object(Bucket=bucket, Key="kept")

    s3_outage.start()
    assert s3_outage.endpoint == endpoint
    assert env_client().get_object(Bucket=bucket, Key="kept")["Body"].read() == b"still here"


def test_environment_points_at_the_server_and_is_restored_after(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "someone-elses")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://elsewhere:9000")
    before = dict(os.environ)
    with ObjectStore(tmp_path, port=12345).environment():
        assert os.environ["S3_ENDPOINT_URL"] == "http://127.0.0.1:12345"
        assert {k: os.environ[k] for k in CREDENTIALS} == CREDENTIALS
        assert not [name for name in CONFLICTING_ENV if name in os.environ]
    assert dict(os.environ) == before
