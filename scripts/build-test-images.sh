#!/usr/bin/env bash
# Build the local, registry-free Docker images the live tests use:
#
#   sandport-test/busybox:latest   Debian's busybox-static in an otherwise empty root fs (~2 MB)
#   sandport-test/debian:bookworm  debootstrap minbase + python3, bash, procps
#
# Usage: scripts/build-test-images.sh [--rebuild] [busybox|debian ...]
#
# Nothing is pulled from an image registry: both root filesystems are assembled locally
# and loaded with `docker import`. The Debian image comes from the apt mirror this machine
# is already configured to use (override with SANDPORT_DEBIAN_MIRROR=URL). An image whose
# tag already exists is reused unless --rebuild is given. Needs root (debootstrap, chroot,
# device nodes); starts the engine with scripts/docker-engine.sh if it is not answering.
#
# Environment knobs:
#   SANDPORT_DEBIAN_MIRROR  Debian mirror URL for debootstrap (default: from apt sources)
#   SANDPORT_BUILD_TMP      parent dir for scratch root filesystems (default /var/tmp)
set -euo pipefail

BUSYBOX_TAG=sandport-test/busybox:latest
DEBIAN_TAG=sandport-test/debian:bookworm
SUITE=bookworm
SANDBOX_UID=1000
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { printf 'build-test-images: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

# --- arguments ---------------------------------------------------------------------------
REBUILD=0
WANT=()
for arg in "$@"; do
    case $arg in
        --rebuild) REBUILD=1 ;;
        -h|--help) usage; exit 0 ;;
        busybox|debian) WANT+=("$arg") ;;
        *) usage >&2; die "unknown argument: $arg" ;;
    esac
done
(( ${#WANT[@]} )) || WANT=(busybox debian)

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot and device nodes need it)"

# --- helpers -----------------------------------------------------------------------------
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

APT_UPDATED=0
apt_install() {   # apt_install PKG... : install Debian packages, running apt-get update at most once
    export DEBIAN_FRONTEND=noninteractive
    if (( ! APT_UPDATED )); then
        apt-get -o DPkg::Lock::Timeout=120 update -qq
        APT_UPDATED=1
    fi
    apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends "$@" >/dev/null
}

pkg_installed() { [[ $(dpkg-query -W -f '${db:Status-Status}' "$1" 2>/dev/null) == installed ]]; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

image_summary() {
    docker image inspect --format '{{.Id}} {{.Size}}' "$1" | awk '{
        printf "%s, %.1f MB", substr($1, 8, 12), $2 / 1000000 }'
}

WORK=
cleanup() {
    local rc=$? m
    if [[ -n $WORK && -d $WORK ]]; then
        # An interrupted debootstrap can leave proc/sys mounted inside the target.
        while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done < <(awk -v w="$WORK" 'index($2, w "/") == 1 { print $2 }' /proc/mounts | sort -r)
        rm -rf --one-file-system "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Find the Debian mirror apt uses for $SUITE: sources.list (one-line format), *.list and
# deb822 *.sources, then whatever `apt-get indextargets` reports.
find_debian_mirror() {
    local files=() f
    [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] && files+=("$f")
    done
    local found=
    if (( ${#files[@]} )); then
        found=$(awk -v suite="$SUITE" '
            function usable(u) { return u ~ /^(https?|file):\/\// }
            function flush(   i, n, s, t, nu, ok) {
                if (FILENAME_SEEN && !result && deb822 && enabled && types ~ /(^|[ \t])deb([ \t]|$)/) {
                    n = split(suites, s, /[ \t]+/); ok = 0
                    for (i = 1; i <= n; i++) if (s[i] == suite) ok = 1
                    if (ok) {
                        nu = split(uris, t, /[ \t]+/)
                        for (i = 1; i <= nu; i++) if (usable(t[i])) { result = t[i]; break }
                    }
                }
                types = ""; uris = ""; suites = ""; enabled = 1
            }
            FNR == 1 { flush(); deb822 = (FILENAME ~ /\.sources$/); FILENAME_SEEN = 1; key = "" }
            deb822 {
                line = $0; sub(/#.*/, "", line)
                if (line ~ /^[ \t]*$/) { if ($0 ~ /^[ \t]*$/) flush(); next }
                if (line ~ /^[A-Za-z][A-Za-z0-9-]*:/) {
                    key = tolower(substr(line, 1, index(line, ":") - 1))
                    val = substr(line, index(line, ":") + 1)
                } else { val = line }          # continuation line
                gsub(/^[ \t]+|[ \t]+$/, "", val)
                if (key == "types")   types  = types  " " val
                if (key == "uris")    uris   = uris   " " val
                if (key == "suites")  suites = suites " " val
                if (key == "enabled" && tolower(val) == "no") enabled = 0
                gsub(/^[ \t]+/, "", types); gsub(/^[ \t]+/, "", uris); gsub(/^[ \t]+/, "", suites)
                next
            }
            {   # one-line format: deb [options] uri suite component...
                line = $0; sub(/#.*/, "", line)
                if (result || line !~ /^[ \t]*deb[ \t]/) next
                sub(/^[ \t]*deb[ \t]+/, "", line)
                if (line ~ /^\[/) sub(/^\[[^]]*\][ \t]*/, "", line)
                split(line, w, /[ \t]+/)
                if (w[2] == suite && usable(w[1])) result = w[1]
            }
            END { flush(); if (result) print result }
        ' "${files[@]}")
    fi
    if [[ -z $found ]] && command -v apt-get >/dev/null 2>&1; then
        # shellcheck disable=SC2016  # $(SITE) etc. are apt's placeholders, not shell
        found=$(apt-get indextargets --format '$(SITE) $(RELEASE) $(TARGET_OF)' 2>/dev/null \
            | awk -v suite="$SUITE" '$2 == suite && $3 == "deb" && $1 ~ /^(https?|file):/ { print $1; exit }')
    fi
    [[ -n $found ]] && printf '%s\n' "${found%/}"
}

# --- images ------------------------------------------------------------------------------
build_busybox() {
    local root=$WORK/busybox bb applet
    pkg_installed busybox-static || { say "installing busybox-static"; apt_install busybox-static; }
    bb=$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -n1)
    [[ -x $bb ]] || die "busybox-static is installed but its binary was not found"

    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,dev,proc,sys,home/sandbox,workspace,tmp,var/tmp}
    install -m 0755 "$bb" "$root/bin/busybox"
    # One symlink per applet, at the path busybox itself lists for it (bin/sh, usr/bin/awk, ...).
    while read -r applet; do
        [[ -n $applet && $applet != bin/busybox ]] || continue
        mkdir -p "$root/$(dirname "$applet")"
        ln -sf /bin/busybox "$root/$applet"
    done < <("$root/bin/busybox" --list-full)
    [[ -L $root/bin/sh ]] || ln -s /bin/busybox "$root/bin/sh"
    chmod 1777 "$root/tmp" "$root/var/tmp"
    chmod 0700 "$root/root"

    cat >"$root/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/bin/sh
sandbox:x:$SANDBOX_UID:$SANDBOX_UID:sandbox:/home/sandbox:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
    cat >"$root/etc/group" <<GROUP
root:x:0:
sandbox:x:$SANDBOX_UID:
nogroup:x:65534:
GROUP
    printf 'root:*::0:::::\nsandbox:*::0:::::\nnobody:*::0:::::\n' >"$root/etc/shadow"
    chmod 0640 "$root/etc/shadow"
    chown "$SANDBOX_UID:$SANDBOX_UID" "$root/home/sandbox" "$root/workspace"

    tar --numeric-owner -C "$root" -cf - . | docker import \
        --change 'CMD ["/bin/sh"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'LABEL org.sandport.test-image=busybox' \
        --message "sandport test image: busybox-static $(dpkg-query -W -f '${Version}' busybox-static)" \
        - "$BUSYBOX_TAG" >/dev/null
}

build_debian() {
    local root=$WORK/debian mirror
    pkg_installed debootstrap || { say "installing debootstrap"; apt_install debootstrap; }
    mirror=${SANDPORT_DEBIAN_MIRROR:-$(find_debian_mirror || true)}
    [[ -n $mirror ]] || die "no Debian mirror for '$SUITE' found in apt's sources; set SANDPORT_DEBIAN_MIRROR=URL"
    say "debootstrap $SUITE from $mirror"

    # debootstrap downloads with wget: hand it apt's proxy, if apt has one and the env has none.
    local proxy=
    eval "$(apt-config shell proxy Acquire::http::Proxy 2>/dev/null || true)"
    if [[ -n $proxy && $proxy != DIRECT && -z ${http_proxy:-} ]]; then export http_proxy=$proxy; fi
    proxy=
    eval "$(apt-config shell proxy Acquire::https::Proxy 2>/dev/null || true)"
    if [[ -n $proxy && $proxy != DIRECT && -z ${https_proxy:-} ]]; then export https_proxy=$proxy; fi

    if ! debootstrap --variant=minbase --include=python3,bash,procps --components=main \
            "$SUITE" "$root" "$mirror" >"$WORK/debootstrap.out" 2>&1; then
        tail -n 30 "$WORK/debootstrap.out" >&2
        [[ -f $root/debootstrap/debootstrap.log ]] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
        die "debootstrap failed (mirror $mirror)"
    fi

    chroot "$root" groupadd --gid "$SANDBOX_UID" sandbox
    chroot "$root" useradd --uid "$SANDBOX_UID" --gid "$SANDBOX_UID" \
        --create-home --shell /bin/bash sandbox
    install -d -m 0755 -o "$SANDBOX_UID" -g "$SANDBOX_UID" "$root/workspace"

    # Keep it small: no apt caches or lists, no docs/manuals, no logs from the bootstrap.
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
           "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
           "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/doc/* \
           "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/tmp/* "$root"/var/tmp/* \
           "$root"/debootstrap
    find "$root/usr/lib" -name __pycache__ -type d -prune -exec rm -rf {} +
    # Docker supplies these at run time; do not bake the build host's into the image.
    : >"$root/etc/resolv.conf"
    : >"$root/etc/hostname"
    : >"$root/etc/machine-id"

    tar --numeric-owner --xattrs -C "$root" -cf - . | docker import \
        --change 'CMD ["/bin/bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'LABEL org.sandport.test-image=debian' \
        --message "sandport test image: debootstrap --variant=minbase $SUITE" \
        - "$DEBIAN_TAG" >/dev/null
}

smoke_busybox() { docker run --rm --network none "$BUSYBOX_TAG" sh -c 'echo ok' | grep -qx ok; }
smoke_debian()  { docker run --rm --network none "$DEBIAN_TAG" python3 -c 'print(1)' | grep -qx 1; }

# --- main --------------------------------------------------------------------------------
if ! timeout 15 docker info >/dev/null 2>&1; then
    say "Docker engine not answering; running $SCRIPT_DIR/docker-engine.sh"
    "$SCRIPT_DIR/docker-engine.sh"
fi

# Two concurrent runs would race on the same tags: serialise them.
exec 9>/var/lock/sandport-test-images.lock
flock -w 900 9 || die "another build-test-images.sh is still running (lock /var/lock/sandport-test-images.lock)"

WORK=$(mktemp -d -p "${SANDPORT_BUILD_TMP:-/var/tmp}" sandport-images.XXXXXX)
chmod 0755 "$WORK"

total=$(now)
for name in "${WANT[@]}"; do
    case $name in busybox) tag=$BUSYBOX_TAG ;; debian) tag=$DEBIAN_TAG ;; esac
    if (( ! REBUILD )) && image_exists "$tag"; then
        say "$tag: exists, reusing ($(image_summary "$tag"))"
        continue
    fi
    old_id=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
    t=$(now)
    say "$tag: building"
    "build_$name"
    build_s=$(elapsed "$t")
    "smoke_$name" || die "$tag: built, but the smoke test failed"
    say "$tag: built in ${build_s}s, smoke test ok ($(image_summary "$tag"))"
    # --rebuild: drop the image the tag used to name, unless a container still uses it.
    if [[ -n $old_id && $old_id != "$(docker image inspect --format '{{.Id}}' "$tag")" ]]; then
        docker image rm "$old_id" >/dev/null 2>&1 || say "$tag: kept the previous image ${old_id:7:12} (still in use)"
    fi
done
say "done in $(elapsed "$total")s"
