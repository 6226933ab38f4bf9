"""`make demo`: a real backup, verify, list and restore on the embedded default.

Starts a throwaway etcd 3.5.1 on loopback with sample Kubernetes-like data, takes an
encrypted backup into a local directory, lists it, verifies it, restores it with
`etcd-backup-agent restore` into a new data dir, proves the restored etcd serves the
same keys, prints the stock-tool commands to do the same by hand, and stops etcd.
Everything lands in ./demo-output (removed and recreated on each run).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.agent_helpers import run_agent, write_config  # noqa: E402
from tests.servers import EtcdServer, etcd_bin, free_port, put_many, read_all  # noqa: E402


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def show(r: subprocess.CompletedProcess[str]) -> None:
    if r.stdout.strip():
        print(r.stdout.rstrip())
    if r.returncode != 0:
        print(r.stderr.rstrip(), file=sys.stderr)
        raise SystemExit(f"demo failed (exit {r.returncode})")


def main() -> int:
    out = REPO / "demo-output"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    step("starting a throwaway etcd 3.5.1 on loopback")
    etcd = EtcdServer(out / "etcd-data").start()
    restored_server: EtcdServer | None = None
    try:
        print(f"etcd at {etcd.endpoint} (pid {etcd.proc.pid if etcd.proc else '?'})")
        step("writing sample data (2000 keys under /registry/)")
        written = put_many(etcd, 2000, prefix="/registry/configmaps/demo/", value_size=400)

        step("creating an age key pair (the identity stays in demo-output, off a real node!)")
        key = out / "backup-identity.txt"
        subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
        recipient = subprocess.run(
            ["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True
        ).stdout.strip()
        print(f"recipient: {recipient}")

        cfg = write_config(
            out / "config.toml",
            endpoint=etcd.endpoint,
            recipient=recipient,
            root=out,
            cluster="demo",
            node="demo-node",
            extra={"log": {"level": "warning"}},
        )
        print(f"config: {cfg}")

        step("etcd-backup-agent config check")
        show(run_agent("config", "check", "--config", cfg))
        step("etcd-backup-agent backup (snapshot -> verify -> zstd -> age -> store)")
        r = run_agent("backup", "--config", cfg, "--json")
        show(r)
        manifest = json.loads(r.stdout)
        step("etcd-backup-agent list")
        show(run_agent("list", "--config", cfg))
        step("etcd-backup-agent verify --backup latest (download, decrypt, check everything)")
        show(run_agent("verify", "--config", cfg, "--backup", "latest", "--identity", key))

        step("restoring the backup into a new data dir (etcd-backup-agent restore)")
        peer = free_port()
        restored = out / "restored-data"
        show(
            run_agent(
                "restore",
                "latest",
                "--config",
                cfg,
                "--identity",
                key,
                "--data-dir",
                restored,
                "--name",
                "demo",
                "--initial-cluster",
                f"demo=http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
            )
        )
        etcd.stop()
        restored_server = EtcdServer(
            restored, name="demo", peer_port=peer, initial_cluster=f"demo=http://127.0.0.1:{peer}"
        ).start()
        back = read_all(restored_server)
        same = all(back.get(k) == v for k, v in written.items())
        print(
            f"restored etcd serves {len(back)} keys; all {len(written)} written keys "
            f"identical: {same}"
        )
        if not same:
            raise SystemExit("demo failed: restored data differs")

        obj = out / "store" / manifest["object"]
        step("the same by hand, with stock tools only")
        print(f"  age -d -i {key} {obj} | zstd -d > snapshot.db")
        print("  etcdutl snapshot status snapshot.db -w table")
        print("  etcdutl snapshot restore snapshot.db --data-dir /var/lib/etcd-restored \\")
        print("    --name <member> --initial-cluster <member>=https://<ip>:2380 \\")
        print("    --initial-advertise-peer-urls https://<ip>:2380")
        print(f"  (etcdutl of this demo: {etcd_bin('etcdutl')})")
        print("\ndemo OK: backed up, verified, encrypted, listed and restored.")
        return 0
    finally:
        if restored_server is not None:
            restored_server.stop()
        etcd.stop()


if __name__ == "__main__":
    raise SystemExit(main())
