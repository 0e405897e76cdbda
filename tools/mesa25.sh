#!/bin/sh
# A second Vulkan driver generation for the tests: Mesa 25 lavapipe from
# bookworm-backports, side by side with the system's Mesa (which is left as it
# is: nothing here is installed with dpkg).
#
#   sh tools/mesa25.sh install      download and unpack it (once; idempotent)
#   sh tools/mesa25.sh run CMD...   install if needed, then run CMD with only
#                                   that driver (VK_DRIVER_FILES) and its
#                                   libraries first on LD_LIBRARY_PATH
#
# install: a private apt configuration (sources bookworm and bookworm-backports
# of this machine's Debian mirror, its own lists and cache under DIR/apt)
# downloads mesa-vulkan-drivers from bookworm-backports, then every library it
# depends on that is missing here or older than it needs (libdrm2 from
# backports on bookworm), and dpkg -x unpacks them into DIR/root. An ICD file
# DIR/lvp_icd.json names DIR's libvulkan_lvp.so by its absolute path. Any
# failure (no network, no such package, a library that does not resolve) exits
# non-zero with the reason: a missing second driver is never skipped silently.
# DIR is MOEVK_MESA25_DIR, default build-mesa25 (ignored by git).
set -eu
cd "$(dirname "$0")/.."
dir=${MOEVK_MESA25_DIR:-build-mesa25}
case "$dir" in /*) ;; *) dir=$(pwd)/$dir ;; esac
what=${1:-install}
[ $# -gt 0 ] && shift
say() { echo "mesa25: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

# The URI of this machine's Debian archive that serves bookworm.
debian_mirror() {
    [ -n "${MOEVK_DEBIAN_MIRROR:-}" ] && { echo "$MOEVK_DEBIAN_MIRROR"; return; }
    m=$(apt-get indextargets --format '$(SITE)' 'Release: bookworm' 'Identifier: Packages' \
        2>/dev/null | head -n 1)
    if [ -z "$m" ]; then # no lists yet: read the sources themselves
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            m=$(awk 'BEGIN { RS = "" }
                /(^|\n)Types:[^\n]*deb([ \t]|\n|$)/ && /(^|\n)Suites:([^\n]*[ \t])?bookworm([ \t]|\n|$)/ {
                    if (match($0, /(^|\n)URIs:[ \t]*[^ \t\n]+/)) {
                        u = substr($0, RSTART, RLENGTH); sub(/^\n?URIs:[ \t]*/, "", u); print u; exit
                    }
                }' "$f")
            [ -n "$m" ] && break
        done
    fi
    if [ -z "$m" ]; then
        m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '
            $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                          if ($(i + 1) == "bookworm") { print $i; exit } }')
    fi
    [ -n "$m" ] || die "no bookworm source in this machine's apt configuration (set MOEVK_DEBIAN_MIRROR)"
    echo "$m"
}

libdir() { dirname "$(find "$dir/root" -name libvulkan_lvp.so -type f | head -n 1)"; }

install() {
    if [ -f "$dir/ready" ] && [ -f "$dir/lvp_icd.json" ]; then
        return 0
    fi
    if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
        die "needs apt-get and dpkg (Debian)"
    fi
    rm -rf "$dir/root" "$dir/debs" "$dir/lvp_icd.json"
    mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial" "$dir/debs" "$dir/root"
    mirror=$(debian_mirror)
    key=/usr/share/keyrings/debian-archive-keyring.gpg
    cat >"$dir/apt/sources.list" <<EOF
deb [signed-by=$key] $mirror bookworm main
deb [signed-by=$key] $mirror bookworm-backports main
EOF
    set -- -o Dir::Etc::SourceList="$dir/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
        -o Dir::State::Lists="$dir/apt/lists" -o Dir::Cache="$dir/apt/cache" \
        -q
    [ "$(id -u)" -eq 0 ] && set -- "$@" -o APT::Sandbox::User=root
    say "apt-get update (bookworm, bookworm-backports; private lists in $dir/apt)"
    apt-get "$@" update >"$dir/apt/update.log" 2>&1 || {
        cat "$dir/apt/update.log" >&2
        die "apt-get update of bookworm-backports failed (network?)"
    }
    grep -E "^(W|E): " "$dir/apt/update.log" >&2 || true
    cd "$dir/debs"
    apt-get "$@" download mesa-vulkan-drivers/bookworm-backports >&2 ||
        die "could not download mesa-vulkan-drivers from bookworm-backports"
    mesa=$(ls mesa-vulkan-drivers_*.deb)
    ver=$(dpkg-deb -f "$mesa" Version)
    case "$ver" in 25.*) ;; *) die "bookworm-backports has mesa-vulkan-drivers $ver, not 25.x" ;; esac
    # each dependency missing here or too old: from backports if it has it, else bookworm
    dpkg-deb -f "$mesa" Depends | tr ',' '\n' | while read -r alt; do
        [ -n "$alt" ] || continue
        first=$(echo "$alt" | cut -d'|' -f1)
        name=$(echo "$first" | sed 's/[ (].*//; s/:any$//')
        op=$(echo "$first" | sed -n 's/.*(\([<>=]*\) *\([^)]*\)).*/\1/p')
        need=$(echo "$first" | sed -n 's/.*(\([<>=]*\) *\([^)]*\)).*/\2/p')
        have=$(dpkg-query -W -f='${db:Status-Status} ${Version}' "$name" 2>/dev/null |
            sed -n 's/^installed //p')
        if [ -n "$have" ] && { [ -z "$op" ] || dpkg --compare-versions "$have" "$op" "$need"; }; then
            continue
        fi
        say "$name ${op:+$op $need }needed (here: ${have:-not installed})"
        apt-get "$@" download "$name/bookworm-backports" >&2 2>/dev/null ||
            apt-get "$@" download "$name" >&2 || die "could not download $name"
        got=$(dpkg-deb -f "$(ls "${name}"_*.deb | head -n 1)" Version)
        [ -z "$op" ] || dpkg --compare-versions "$got" "$op" "$need" ||
            die "$name $got does not satisfy $op $need"
    done
    for deb in *.deb; do
        dpkg-deb -x "$deb" "$dir/root"
        say "unpacked $deb"
    done
    cd - >/dev/null
    lib=$(libdir)
    [ -f "$lib/libvulkan_lvp.so" ] || die "no libvulkan_lvp.so in $mesa"
    missing=$(LD_LIBRARY_PATH="$lib" ldd "$lib/libvulkan_lvp.so" | grep "not found" || true)
    [ -z "$missing" ] || die "libvulkan_lvp.so does not resolve: $missing"
    api=$(sed -n 's/.*"api_version": *"\([^"]*\)".*/\1/p' "$dir"/root/usr/share/vulkan/icd.d/lvp_icd*.json |
        head -n 1)
    cat >"$dir/lvp_icd.json" <<EOF
{
    "file_format_version": "1.0.0",
    "ICD": {
        "library_path": "$lib/libvulkan_lvp.so",
        "api_version": "${api:-1.4.0}"
    }
}
EOF
    echo "$ver" >"$dir/ready"
    say "mesa-vulkan-drivers $ver ready in $dir (ICD $dir/lvp_icd.json)"
}

case "$what" in
install)
    install
    ;;
run)
    [ $# -gt 0 ] || die "usage: sh tools/mesa25.sh run CMD..."
    install
    lib=$(libdir)
    VK_DRIVER_FILES=$dir/lvp_icd.json
    LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export VK_DRIVER_FILES LD_LIBRARY_PATH
    exec "$@"
    ;;
*)
    echo "usage: sh tools/mesa25.sh install | run CMD..." >&2
    exit 2
    ;;
esac
