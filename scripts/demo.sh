#!/usr/bin/env bash
# The main job end to end, on a fresh machine: installs what is missing,
# builds the programs, starts the engine simulator (with a real imageiod host
# daemon and a proxy daemon), makes a sample qcow2 image with data, zero
# clusters and holes, uploads it to a new disk with `imageio upload`,
# downloads the disk back with `imageio download`, verifies both copies with
# `qemu-img compare` and the block checksum, prints a summary and stops
# everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash scripts/install-deps.sh
export PATH="/usr/local/go/bin:$PATH"
make -s build

work="$root/demo-work"
rm -rf "$work"
mkdir -p "$work/storage" "$work/state" "$work/config"
export XDG_CONFIG_HOME="$work/config"

sim_pid=""
cleanup() {
    if [ -n "$sim_pid" ] && kill -0 "$sim_pid" 2>/dev/null; then
        kill -TERM "$sim_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$sim_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$sim_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { printf '\n== %s\n' "$*" >&2; }

step "starting the engine simulator (imageiod host + proxy)"
bin/enginesim --storage "$work/storage" --state-dir "$work/state" \
    --listen 127.0.0.1:0 >"$work/enginesim.out" 2>"$work/enginesim.log" &
sim_pid=$!
for _ in $(seq 1 300); do
    grep -q '^storage_domains' "$work/enginesim.out" 2>/dev/null && break
    kill -0 "$sim_pid" 2>/dev/null || { cat "$work/enginesim.log" >&2; exit 1; }
    sleep 0.1
done
grep -q '^storage_domains' "$work/enginesim.out" || { echo "demo: enginesim did not start" >&2; exit 1; }
# enginesim prints an INI section body: use it as an imageio profile.
( umask 077; { echo "[demo]"; grep -v '^storage_domains' "$work/enginesim.out"; } >"$XDG_CONFIG_HOME/imageio.conf" )
sed -n 's/^engine_url = /engine: /p' "$work/enginesim.out" >&2

step "making a sample image: qcow2, 1 GiB virtual, random data, zero clusters and holes"
img="$work/sample.qcow2"
raw="$work/sample.raw"
truncate -s 1G "$raw"
for spec in 0:64 200:16 333:40 700:100 1000:3; do
    off=${spec%%:*}; len=${spec##*:}
    dd if=/dev/urandom of="$raw" bs=1M seek="$off" count="$len" conv=notrunc status=none
done
qemu-img convert -q -f raw -O qcow2 "$raw" "$img"
qemu-io -f qcow2 -c "write -z 100M 64M" -c "write -z 500M 32M" "$img" >/dev/null
rm -f "$raw"
bin/imageio info "$img" >&2

step "uploading to a new disk on storage domain data1"
disk_id=$(bin/imageio upload -c demo "$img" --storage-domain data1 --name demo-disk --verify)
echo "disk id: $disk_id" >&2

step "downloading the disk back as qcow2"
back="$work/downloaded.qcow2"
bin/imageio download -c demo --disk-id "$disk_id" "$back" --format qcow2 --verify >/dev/null

step "verifying"
qemu-img compare -q "$img" "$back"
volume=$(find "$work/storage" -type f -name "*$disk_id*" | head -1)
if [ -n "$volume" ]; then
    qemu-img compare -q "$img" "$volume"
fi
sum_src=$(bin/imageio checksum "$img")
sum_back=$(bin/imageio checksum "$back")
[ "$sum_src" = "$sum_back" ] || { echo "demo: checksums differ: $sum_src vs $sum_back" >&2; exit 1; }

step "summary"
{
    echo "source:      $img ($(du -h "$img" | cut -f1) on disk, 1 GiB virtual)"
    echo "disk:        $disk_id on data1${volume:+ ($volume)}"
    echo "downloaded:  $back"
    echo "checksum:    $sum_src"
    echo "qemu-img compare: source == disk == download"
} >&2
echo "demo: OK"
