#!/usr/bin/env bash
# Builds the drover discovery image: build/discovery/vmlinuz (Debian's
# kernel) and build/discovery/initrd.img (a gzip cpio with busybox-static,
# the static drover binary, the NIC and disk drivers, and /init from
# scripts/discovery/). See docs/discovery.md.
#
# Environment:
#   OUT            output directory (default build/discovery)
#   DROVER_BIN     a static drover binary to put in (default: built here
#                  with CGO_ENABLED=0)
#   KVER           kernel version (default: the newest in /boot with modules)
#   EXTRA_MODULES  more kernel modules to carry (space-separated)
#
# Idempotent: when no input changed (kernel, busybox, drover, the scripts,
# the module list) it only says so. Installs linux-image-amd64,
# busybox-static, cpio and kmod from Debian when they are missing.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${OUT:-build/discovery}
SRC=scripts/discovery

log() { echo "discovery-image: $*" >&2; }
die() { log "$*"; exit 1; }

# NIC drivers (modules in Debian's kernel). Drivers that need firmware
# from Debian's non-free firmware packages (bnx2, bnx2x, qede, ...) are
# left out: without the firmware they cannot bring the NIC up anyway.
NIC_MODULES="virtio_net e1000 e1000e igb igc ixgbe i40e ice bnxt_en tg3 r8169 mlx4_en mlx5_core vmxnet3 ena sfc"
# Buses and disks, so the inventory lists the disks and tasks can
# partition them and write images; ext4 and vfat to mount what they wrote.
OTHER_MODULES="virtio_pci virtio_rng virtio_blk virtio_scsi sd_mod ahci ata_piix nvme megaraid_sas mpt3sas ext4 vfat nls_cp437 nls_ascii"

# --- What the build needs, from Debian ---
missing=()
for pkg in linux-image-amd64 busybox-static cpio kmod; do
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$pkg")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]} (run as root, or apt-get install ${missing[*]})"
	log "installing ${missing[*]}"
	apt-get update -qq -o DPkg::Lock::Timeout=600
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -z "${KVER:-}" ]; then
	for k in $(ls /lib/modules 2>/dev/null | sort -V -r); do
		if [ -r "/boot/vmlinuz-$k" ]; then
			KVER=$k
			break
		fi
	done
fi
[ -n "${KVER:-}" ] || die "no kernel with modules in /boot and /lib/modules (apt-get install linux-image-amd64)"
KERNEL=/boot/vmlinuz-$KVER
MODDIR=/lib/modules/$KVER
[ -r "$KERNEL" ] && [ -d "$MODDIR" ] || die "kernel $KVER: $KERNEL or $MODDIR missing"
# ldd fails on a static binary: nothing to load.
is_static() { ! ldd "$1" >/dev/null 2>&1; }
BUSYBOX=/bin/busybox
is_static "$BUSYBOX" || die "$BUSYBOX is not static (apt-get install busybox-static)"

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# Work files stay out of OUT, which a boot server may serve as it is.
WORK=$(dirname "$OUT")/.discovery-work
mkdir -p "$WORK"

if [ -z "${DROVER_BIN:-}" ]; then
	DROVER_BIN=$WORK/drover
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$DROVER_BIN" ./cmd/drover
fi
[ -x "$DROVER_BIN" ] || die "DROVER_BIN=$DROVER_BIN is not an executable"
is_static "$DROVER_BIN" || die "$DROVER_BIN is dynamically linked: build it with CGO_ENABLED=0"

# --- Modules and their dependencies ---
declare -A seen=()
mods=()
absent=()
add_module() {
	local m=$1 file deps d
	m=${m//-/_}
	[ -n "${seen[$m]:-}" ] && return
	seen[$m]=1
	if ! file=$(modinfo -k "$KVER" -F filename "$m" 2>/dev/null) || [ -z "$file" ]; then
		absent+=("$m")
		return
	fi
	case "$file" in (builtin*|"(builtin)") return ;; esac
	mods+=("$file")
	deps=$(modinfo -k "$KVER" -F depends "$m" 2>/dev/null | tr ',' ' ')
	for d in $deps; do add_module "$d"; done
	# Soft dependencies (crc32c for ext4, ...) are needed at load time too.
	for d in $(modinfo -k "$KVER" -F softdep "$m" 2>/dev/null | tr ' ' '\n' | grep -v ':$' || true); do
		add_module "$d"
	done
}
for m in $NIC_MODULES $OTHER_MODULES ${EXTRA_MODULES:-}; do add_module "$m"; done
[ ${#absent[@]} -eq 0 ] || log "not in kernel $KVER (skipped): ${absent[*]}"
mapfile -t mods < <(printf '%s\n' "${mods[@]}" | sort -u)

# --- Up to date? ---
inputs=$(
	{
		echo "kernel $KVER"
		for f in "$KERNEL" "$BUSYBOX" "$DROVER_BIN" "$0" "$SRC/init" "$SRC/udhcpc.script"; do
			sha256sum < "$f"
		done
		printf '%s\n' "${mods[@]}" | xargs sha256sum
		echo "nics $NIC_MODULES"
	} | sha256sum | cut -d' ' -f1
)
if [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.img" ] && [ "$(cat "$OUT/.inputs" 2>/dev/null)" = "$inputs" ]; then
	log "up to date: $OUT/vmlinuz, $OUT/initrd.img ($(du -h "$OUT/initrd.img" | cut -f1))"
	exit 0
fi

# --- The initramfs tree ---
tree=$(mktemp -d "$WORK/tree.XXXXXX")
trap 'rm -rf "$tree" "$WORK/initrd.tmp" "$WORK/vmlinuz.tmp"' EXIT
mkdir -p "$tree"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,root,etc/udhcpc,var,lib/modules}
ln -s ../run "$tree/var/run"
cp "$BUSYBOX" "$tree/bin/busybox"
for applet in $("$BUSYBOX" --list-full); do
	[ -e "$tree/$applet" ] || ln -s /bin/busybox "$tree/$applet"
done
install -m 0755 "$DROVER_BIN" "$tree/bin/drover"
install -m 0755 "$SRC/init" "$tree/init"
install -m 0755 "$SRC/udhcpc.script" "$tree/etc/udhcpc/default.script"
for f in "${mods[@]}"; do
	mkdir -p "$tree$(dirname "$f")"
	cp "$f" "$tree$f"
done
for f in modules.builtin modules.builtin.modinfo modules.order; do
	[ -f "$MODDIR/$f" ] && cp "$MODDIR/$f" "$tree$MODDIR/$f"
done
depmod -b "$tree" "$KVER"
# What /init loads when no NIC shows up from the devices' modaliases.
echo "virtio_pci $NIC_MODULES" | tr ' ' '\n' > "$tree/etc/drover-discovery-nic-modules"
version=$("$DROVER_BIN" --version 2>/dev/null | head -n 1 || true)
echo "drover discovery image (${version:-drover}; Debian kernel $KVER)" > "$tree/etc/drover-discovery-release"
cat > "$tree/etc/os-release" <<EOF
NAME="drover discovery"
ID=drover-discovery
PRETTY_NAME="drover discovery image (kernel $KVER)"
EOF
echo 'root:x:0:0:root:/root:/bin/sh' > "$tree/etc/passwd"
echo 'root:x:0:' > "$tree/etc/group"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' > "$tree/etc/hosts"
: > "$tree/etc/resolv.conf"
# The kernel opens /dev/console before /init mounts devtmpfs.
if [ "$(id -u)" = 0 ]; then
	mknod -m 0600 "$tree/dev/console" c 5 1
	mknod -m 0666 "$tree/dev/null" c 1 3
fi

# Reproducible: fixed times and order, no gzip timestamp. (gzip -9 would
# save under 1% for six times the time.)
find "$tree" -exec touch -h -d @0 {} +
(cd "$tree" && find . -print0 | LC_ALL=C sort -z |
	cpio -o -0 -H newc -R 0:0 --reproducible --quiet) | gzip -6 -n > "$WORK/initrd.tmp"
cp "$KERNEL" "$WORK/vmlinuz.tmp"
mv "$WORK/vmlinuz.tmp" "$OUT/vmlinuz"
mv "$WORK/initrd.tmp" "$OUT/initrd.img"
{
	echo "kernel: $KVER"
	echo "drover: ${version:-?}"
	echo "busybox: $("$BUSYBOX" | head -n 1)"
	echo "modules: $(printf '%s\n' "${mods[@]}" | xargs -n1 basename | sed 's/\.ko.*//' | sort | tr '\n' ' ')"
	echo "unpacked: $(du -sh --apparent-size "$tree" | cut -f1)"
} > "$OUT/manifest.txt"
echo "$inputs" > "$OUT/.inputs"
log "built $OUT/vmlinuz ($(du -h "$OUT/vmlinuz" | cut -f1)) and $OUT/initrd.img ($(du -h "$OUT/initrd.img" | cut -f1), $(du -sh --apparent-size "$tree" | cut -f1) unpacked, ${#mods[@]} modules)"
