"""Control protocol: request parsing and schema checks."""

from __future__ import annotations

import pytest

from etcd_backup_agent.control import protocol as proto


def test_valid_request() -> None:
    req = proto.parse_request(b'{"v":1,"op":"prune","args":{"dry_run":true}}')
    assert req.op == "prune" and req.args == {"dry_run": True}


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"nope", proto.BAD_REQUEST),
        (b'{"v":2,"op":"status"}', proto.UNSUPPORTED_VERSION),
        (b'{"v":1,"op":"rm"}', proto.UNKNOWN_OP),
        (b'{"v":1,"op":"verify","args":{}}', proto.BAD_ARGS),
        (
            b'{"v":1,"op":"restore","args":{"backup":"x","data_dir":"/d","bump_revision":1.5}}',
            proto.BAD_ARGS,
        ),
        (b'{"v":1,"op":"status","args":{"x":1}}', proto.BAD_ARGS),
    ],
)
def test_bad_requests(line: bytes, code: str) -> None:
    with pytest.raises(proto.ProtocolError) as info:
        proto.parse_request(line)
    assert info.value.code == code
