#!/bin/bash
# Builds the kernel-client test's guest: a Debian kernel that has nbd.ko and
# an uncompressed initramfs with busybox, nbd-client, mke2fs, e2fsck, the
# given nbdmirror binary (static) and init.sh as /init.
#
#   build-initramfs.sh OUTDIR NBDMIRROR [TLSDIR]   # writes OUTDIR/vmlinuz, OUTDIR/initrd.cpio
#
# TLSDIR, if given, is copied to the guest's /tls (a client's ca-cert.pem,
# client-cert.pem, client-key.pem).
#
# Nothing is installed on the host: the .debs are fetched with apt-get download
# into $NBDMIRROR_VM_CACHE (default ~/.cache/nbdmirror-vm, ~72 MB once) and
# unpacked there; mke2fs and e2fsck come from the host with their libraries.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
OUT=${1:?usage: build-initramfs.sh OUTDIR NBDMIRROR}
BIN=${2:?usage: build-initramfs.sh OUTDIR NBDMIRROR}
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${NBDMIRROR_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nbdmirror-vm}
for tool in apt-get apt-cache dpkg-deb flock ldd mke2fs e2fsck; do
	command -v "$tool" >/dev/null || { echo "build-initramfs: $tool not found (Debian host with e2fsprogs needed)" >&2; exit 1; }
done
if LC_ALL=C ldd "$BIN" 2>&1 | grep -q '=>'; then
	echo "build-initramfs: $BIN is not static (build it with CGO_ENABLED=0)" >&2; exit 1
fi

# The kernel the metapackage points at, e.g. linux-image-6.1.0-56-amd64.
KPKG=${KPKG:-$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')}
[ -n "$KPKG" ] || { echo "build-initramfs: no linux-image-amd64 in the apt lists (run apt-get update)" >&2; exit 1; }
KVER=${KPKG#linux-image-}
PKGS="$KPKG busybox-static nbd-client libnl-3-200 libnl-genl-3-200"
# Modules in load order (their depends= lines, read once from .modinfo).
MODS="lib/crc16.ko crypto/crc32c_generic.ko fs/mbcache.ko fs/jbd2/jbd2.ko fs/ext4/ext4.ko
drivers/block/nbd.ko drivers/net/ethernet/intel/e1000/e1000.ko"

mkdir -p "$CACHE/debs"
exec 9>"$CACHE/.lock" && flock 9 # one build at a time in the cache
deb() { ls "$CACHE/debs/${1}_"*.deb 2>/dev/null | tail -n1; }
for p in $PKGS; do
	[ -n "$(deb "$p")" ] && continue
	case "$p" in linux-image-*) rm -rf "$CACHE"/debs/linux-image-*.deb "$CACHE"/x-* ;; esac # a new kernel
	if ! (cd "$CACHE/debs" && apt-get -qq download "$p" 2>"$CACHE/apt.err"); then
		cat "$CACHE/apt.err" >&2
		echo "build-initramfs: apt-get download $p failed" >&2
		exit 1
	fi
	echo "build-initramfs: downloaded $(basename "$(deb "$p")")"
done
X="$CACHE/x-$KVER" # the packages, unpacked once; of the kernel only vmlinuz and MODS
if [ ! -e "$X/.done" ]; then
	rm -rf "$X" && mkdir -p "$X"
	for p in $PKGS; do
		case "$p" in
		linux-image-*) dpkg-deb --fsys-tarfile "$(deb "$p")" | tar -x -C "$X" "./boot/vmlinuz-$KVER" \
			$(for m in $MODS; do echo "./lib/modules/$KVER/kernel/$m"; done) ;;
		*) dpkg-deb -x "$(deb "$p")" "$X" ;;
		esac
	done
	touch "$X/.done"
fi

R="$OUT/root"
rm -rf "$R" && mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,mnt,tmp,lib/modules,run}
cp "$X/bin/busybox" "$R/bin/busybox"
install -m755 "$BIN" "$R/bin/nbdmirror"
install -m755 "$HERE/init.sh" "$R/init"
if [ -n "${3:-}" ]; then mkdir -p "$R/tls" && cp "$3"/*.pem "$R/tls/" && chmod 600 "$R"/tls/*-key.pem; fi
for m in $MODS; do cp "$X/lib/modules/$KVER/kernel/$m" "$R/lib/modules/"; done

# copy_bin SRC DST: a dynamic binary and its libraries, the unpacked .debs' first.
copy_bin() {
	install -D -m755 "$1" "$R$2"
	LD_LIBRARY_PATH="$X/usr/lib/x86_64-linux-gnu:$X/lib/x86_64-linux-gnu" ldd "$1" |
		awk '/=>/ && $3 ~ /^\// {print $3} /^\t\/lib64/ {print $1}' |
		while read -r lib; do
			dst=$lib
			case "$lib" in "$X"/*) dst=/lib/x86_64-linux-gnu/$(basename "$lib") ;; esac
			[ -e "$R$dst" ] || install -D -m755 "$(readlink -f "$lib")" "$R$dst"
		done
}
copy_bin "$X/sbin/nbd-client" /sbin/nbd-client
copy_bin "$(command -v mke2fs)" /sbin/mke2fs
copy_bin "$(command -v e2fsck)" /sbin/e2fsck
ln -s mke2fs "$R/sbin/mkfs.ext4"
cp /etc/mke2fs.conf "$R/etc/" 2>/dev/null || true

cp "$X/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
# Uncompressed: under TCG, unpacking a compressed initramfs costs seconds of boot.
(cd "$R" && find . | "$X/bin/busybox" cpio -o -H newc 2>/dev/null) >"$OUT/initrd.cpio"
echo "build-initramfs: $KPKG, initrd $(du -h "$OUT/initrd.cpio" | cut -f1), cache $CACHE"
