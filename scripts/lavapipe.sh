#!/usr/bin/env bash
# Mesa's software Vulkan driver (lavapipe) and the Vulkan loader, unpacked into a private folder,
# so that ncnn's Vulkan path can be tested on a machine without a GPU (tests/plugins/test_ncnn_vulkan.py).
#
# Debian/Ubuntu only: `apt-get download` fetches mesa-vulkan-drivers and libvulkan1 (plus any
# library they link that this machine lacks) and `dpkg -x` unpacks them; nothing is installed
# system-wide. The folder (default .cache/lavapipe, or $UNIRT_LAVAPIPE_DIR) then holds:
#   lvp_icd.json   lavapipe's ICD manifest, library_path pointing at the unpacked driver
#   env            VK_ICD_FILENAMES=... and LD_LIBRARY_PATH=... (the private lib dir only)
# On success stdout is the environment to use, for `eval "$(scripts/lavapipe.sh)"`; everything
# else goes to stderr. A second run reuses the folder. Exit status 1 (with the reason on the last
# line of stderr) when it cannot be done: no apt, a mirror down, a library still missing.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${UNIRT_LAVAPIPE_DIR:-$PWD/.cache/lavapipe}"
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"
ROOT="$DEST/root"
ENV_FILE="$DEST/env"

log() { echo "lavapipe: $*" >&2; }
fail() { log "$*"; exit 1; }

print_env() {
    # shellcheck disable=SC1090
    . "$ENV_FILE"
    echo "export VK_ICD_FILENAMES=$VK_ICD_FILENAMES"
    echo "export LD_LIBRARY_PATH=$LD_LIBRARY_PATH\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
}

if [ -f "$ENV_FILE" ] && (. "$ENV_FILE" && [ -f "$VK_ICD_FILENAMES" ] \
        && [ -e "$LD_LIBRARY_PATH/libvulkan.so.1" ]); then
    print_env
    exit 0
fi
command -v apt-get >/dev/null && command -v dpkg >/dev/null \
    || fail "needs apt-get and dpkg (Debian or Ubuntu)"

DEBS="$DEST/debs"
mkdir -p "$DEBS"
download() {  # apt-get download into $DEBS; one `apt-get update` retry when running as root
    if (cd "$DEBS" && apt-get download -q "$@" >&2 2>"$DEST/apt.log"); then return 0; fi
    if [ "$(id -u)" = 0 ]; then
        log "apt-get download failed; refreshing the package lists once"
        apt-get update -qq >&2 2>>"$DEST/apt.log" || true
        (cd "$DEBS" && apt-get download -q "$@" >&2 2>>"$DEST/apt.log") && return 0
    fi
    fail "apt-get download $* failed: $(grep -E '^(E|W):' "$DEST/apt.log" | tail -1)"
}
unpack() { for deb in "$DEBS"/*.deb; do dpkg -x "$deb" "$ROOT"; done; }

log "downloading mesa-vulkan-drivers and libvulkan1 into $DEBS"
download mesa-vulkan-drivers libvulkan1
rm -rf "$ROOT"
unpack
DRIVER="$(find "$ROOT" -name libvulkan_lvp.so -print -quit)"
[ -n "$DRIVER" ] || fail "no libvulkan_lvp.so in mesa-vulkan-drivers"
LIB="$(dirname "$DRIVER")"
[ -e "$LIB/libvulkan.so.1" ] || fail "no libvulkan.so.1 in libvulkan1"

missing() { LD_LIBRARY_PATH="$LIB" ldd "$DRIVER" | awk '/not found/ {print $1}'; }
if [ -n "$(missing)" ]; then
    # The driver links libraries this machine lacks (libLLVM, X/Wayland client libraries):
    # fetch the dependencies of mesa-vulkan-drivers that dpkg does not have installed.
    log "missing here: $(missing | tr '\n' ' ')"
    wanted=()
    while read -r pkg; do
        status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
        [ "$status" = installed ] || wanted+=("$pkg")
    done < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
                 --no-breaks --no-replaces --no-enhances mesa-vulkan-drivers \
             | grep -v '^ ' | grep -v '^<' | sort -u)
    [ "${#wanted[@]}" -gt 0 ] || fail "libraries missing but every dependency is installed"
    log "downloading ${wanted[*]}"
    download "${wanted[@]}"
    unpack
    [ -z "$(missing)" ] || fail "still missing after unpacking the dependencies: $(missing | tr '\n' ' ')"
fi

MANIFEST="$(find "$ROOT" -name 'lvp_icd*.json' -print -quit)"
[ -n "$MANIFEST" ] || fail "no lvp_icd json in mesa-vulkan-drivers"
# The manifest names the system path; point it at the unpacked driver.
sed -E "s#\"library_path\": *\"[^\"]*\"#\"library_path\": \"$DRIVER\"#" "$MANIFEST" \
    >"$DEST/lvp_icd.json"
grep -q "$DRIVER" "$DEST/lvp_icd.json" || fail "could not rewrite library_path in $MANIFEST"
printf 'VK_ICD_FILENAMES=%s\nLD_LIBRARY_PATH=%s\n' "$DEST/lvp_icd.json" "$LIB" >"$ENV_FILE"
log "ready: $(du -sh "$ROOT" | cut -f1) in $ROOT"
print_env
