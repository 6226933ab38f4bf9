#!/usr/bin/env bash
# Build dist/etcd-backup-agent_<version>_<arch>.deb: a self-contained virtualenv under
# /opt/etcd-backup-agent (runtime dependencies only, from the package index), the systemd unit,
# the example config as a conffile, and the docs. Run with `make deb`.
#
# The venv is made with the TARGET's interpreter (Debian's /usr/bin/python3 by default;
# override with PYTHON=...): native wheels (grpcio, pyrage, zstandard, ...) must match its
# minor version, so the package depends on exactly that minor version.
#
# How the venv ends up at /opt without root: it is created inside a staging root at
# <stage>/opt/etcd-backup-agent, then every file naming the staging path (script shebangs,
# pyvenv.cfg, activate scripts) is rewritten to /opt/etcd-backup-agent, and the build fails if
# any file still names the staging directory. bin/python stays a symlink to the system
# interpreter; Python finds the venv from pyvenv.cfg beside it, so the tree also runs where
# `dpkg-deb -x` unpacks it (the tests rely on this).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
OUT=${OUT:-$ROOT/dist}
PREFIX=/opt/etcd-backup-agent
PKG=etcd-backup-agent
PIP_FLAGS=(--disable-pip-version-check --no-input --quiet)

die() { echo "build-deb: $*" >&2; exit 1; }
for tool in dpkg-deb dpkg gzip sed find objdump; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
[ -x "$PYTHON" ] || die "python interpreter $PYTHON not found (set PYTHON=...)"

VERSION=$(sed -n 's/^__version__ = "\([^"]*\)"$/\1/p' "$ROOT/agent/etcd_backup_agent/__init__.py")
[ -n "$VERSION" ] || die "cannot read __version__ from agent/etcd_backup_agent/__init__.py"
ARCH=$(dpkg --print-architecture)
PYVER=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PYNEXT=$("$PYTHON" -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')
PYREAL=$(readlink -f "$PYTHON")
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' || die "python >= 3.11 required"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/build-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
STAGE=$WORK/root
VENV=$STAGE$PREFIX
SRC=$WORK/src
umask 022

echo "build-deb: $PKG $VERSION ($ARCH, python $PYVER)"

# 1. A clean copy of the sources, so the build leaves no egg-info/build dirs in the tree.
mkdir -p "$SRC"
( cd "$ROOT" && tar -cf - pyproject.toml agent $(ls README.md LICENSE 2>/dev/null || true) ) \
  | tar -C "$SRC" -xf -
find "$SRC" -name __pycache__ -prune -exec rm -rf {} +
[ -f "$SRC/README.md" ] || echo "# etcd-backup-agent" > "$SRC/README.md"

# 2. The venv at its final path inside the staging root; the project wheel and its runtime
#    dependencies (no dev extras), then pip and setuptools removed: nothing installs at runtime.
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install "${PIP_FLAGS[@]}" --upgrade pip
"$VENV/bin/pip" wheel "${PIP_FLAGS[@]}" --no-deps --wheel-dir "$WORK/wheels" "$SRC"
"$VENV/bin/pip" install "${PIP_FLAGS[@]}" --no-compile --prefer-binary "$WORK/wheels/"*.whl
"$VENV/bin/pip" check >/dev/null || die "pip check failed"
"$VENV/bin/pip" freeze --all > "$WORK/requirements.lock"
"$VENV/bin/python" -m pip uninstall "${PIP_FLAGS[@]}" -y pip setuptools wheel 2>/dev/null || true
rm -f "$VENV"/bin/pip* "$VENV"/bin/activate* "$VENV"/bin/Activate.ps1 "$VENV"/bin/jp.py
# Shared objects need no execute bit (lintian: shared-library-is-executable).
find "$VENV" -type f -name '*.so*' -exec chmod 0644 {} +
find "$VENV" -name __pycache__ -prune -exec rm -rf {} +
find "$VENV" -name direct_url.json -delete

# 3. Relocate: point shebangs, pyvenv.cfg and the interpreter link at the final paths.
grep -rlI --null -F "$VENV" "$VENV/bin" | xargs -0 -r sed -i "s#$VENV#$PREFIX#g"
sed -i -e "s#$VENV#$PREFIX#g" -e "s#^home = .*#home = $(dirname "$PYREAL")#" "$VENV/pyvenv.cfg"
sed -i '/^command = /d' "$VENV/pyvenv.cfg"
ln -sfn "/usr/bin/python$PYVER" "$VENV/bin/python3"
ln -sfn python3 "$VENV/bin/python"
if leftovers=$(grep -rlI -F "$WORK" "$STAGE"); then
  die "files still name the staging dir: $leftovers"
fi
head -1 "$VENV/bin/$PKG" | grep -qx "#!$PREFIX/bin/python[0-9.]*" || die "bad shebang in bin/$PKG"
cp "$WORK/requirements.lock" "$VENV/requirements.lock"

# 4. Commands, unit, config, docs and examples.
install -d -m 0755 "$STAGE/usr/bin"
ln -s "$PREFIX/bin/etcd-backup-agent" "$STAGE/usr/bin/etcd-backup-agent"
ln -s "$PREFIX/bin/etcd-backupctl" "$STAGE/usr/bin/etcd-backupctl"
install -D -m 0644 "$ROOT/systemd/etcd-backup-agent.service" \
  "$STAGE/lib/systemd/system/etcd-backup-agent.service"
install -d -m 0700 "$STAGE/etc/etcd-backup-agent"
install -m 0600 "$ROOT/config/example.toml" "$STAGE/etc/etcd-backup-agent/config.toml"
DOC=$STAGE/usr/share/doc/$PKG
install -d -m 0755 "$DOC/examples/systemd" "$DOC/examples/config" "$DOC/examples/prometheus" \
  "$DOC/examples/grafana"
for f in install.md packaging.md security.md runbooks.md; do
  [ -f "$ROOT/docs/$f" ] && install -m 0644 "$ROOT/docs/$f" "$DOC/$f"
done
install -m 0644 "$ROOT"/systemd/examples/*.conf "$DOC/examples/systemd/"
install -m 0644 "$ROOT/config/example.toml" "$ROOT"/config/examples/*.toml "$DOC/examples/config/"
install -m 0644 "$ROOT/packaging/prometheus/etcd-backup-agent.rules.yml" "$DOC/examples/prometheus/"
install -m 0644 "$ROOT/packaging/grafana/etcd-backup-agent.json" "$DOC/examples/grafana/"
cat > "$DOC/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: $PKG
Comment: $PREFIX holds third-party Python packages installed from the Python Package
 Index; their licenses are in $PREFIX/lib/python$PYVER/site-packages/*.dist-info/.

Files: *
Copyright: 2026 etcd-backup-agent authors
License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 can be found in
 /usr/share/common-licenses/Apache-2.0.
EOF
printf '%s (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- %s  %s\n' \
  "$PKG" "$VERSION" "$VERSION" "etcd-backup-agent maintainers <maintainers@example.org>" \
  "$(date -R -u -d "@${SOURCE_DATE_EPOCH:-$(stat -c %Y "$ROOT/agent/etcd_backup_agent/__init__.py")}")" \
  | gzip -9n > "$DOC/changelog.gz"

# 5. Control files and maintainer scripts.
install -d -m 0755 "$STAGE/DEBIAN"
install -m 0755 "$ROOT/packaging/debian/postinst" "$ROOT/packaging/debian/prerm" \
  "$ROOT/packaging/debian/postrm" "$STAGE/DEBIAN/"
echo "/etc/etcd-backup-agent/config.toml" > "$STAGE/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
# The bundled native extensions need this glibc at least (newest GLIBC_x.y symbol version).
LIBC_MIN=$(find "$VENV" -type f -name '*.so*' -print0 | xargs -0 -r objdump -T 2>/dev/null \
  | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
[ -n "$LIBC_MIN" ] || die "cannot find the glibc version the native extensions need"
cat > "$STAGE/DEBIAN/control" <<EOF
Package: $PKG
Version: $VERSION
Architecture: $ARCH
Maintainer: etcd-backup-agent maintainers <maintainers@example.org>
Installed-Size: $SIZE
Depends: python3 (>= $PYVER~), python3 (<< $PYNEXT~), python$PYVER, libc6 (>= $LIBC_MIN)
Recommends: age, zstd
Section: admin
Priority: optional
Description: verified, encrypted etcd snapshots to S3 or a local directory
 A daemon for Kubernetes control-plane nodes (kubeadm, systemd etcd, k3s/RKE2):
 scheduled etcd snapshots, verified natively, compressed with zstd and encrypted
 with age to public keys only, stored in S3 or a local directory, pruned by a
 GFS retention policy, with Prometheus metrics, restore drills and restore on
 the node. Ships a self-contained Python virtualenv in $PREFIX.
 .
 The service is installed but neither enabled nor started: configure the age
 recipients and the store in /etc/etcd-backup-agent/config.toml first.
EOF

# Reproducible-ish: fixed mtimes when SOURCE_DATE_EPOCH is set.
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
  find "$STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
fi

mkdir -p "$OUT"
DEB="$OUT/${PKG}_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB" >/dev/null
echo "build-deb: wrote $DEB ($(du -h "$DEB" | cut -f1))"
