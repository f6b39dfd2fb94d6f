#!/bin/busybox sh
# /init of the kernel-client test's guest (cmd/nbdmirror/vm_test.go boots it).
# qemu forwards 10.0.2.100:10809 to the pair's Primary and 10.0.2.101:10809 to
# its Secondary, one socat per connection. Lines for the host start with
# "VMTEST:"; the last one is "VMTEST: RESULT: PASS" or "VMTEST: RESULT: FAIL why".
# The host kills the Primary once it reads "fsynced N" lines; the guest notices
# by its writes failing and asks the Secondary, which refuses it until the host,
# told so, promotes it.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t debugfs debugfs /sys/kernel/debug
echo 1 >/proc/sys/kernel/printk # the console is for VMTEST lines; dmesg goes out on failure

PRIMARY=10.0.2.100:10809
SECONDARY=10.0.2.101:10809

say() { echo "VMTEST: $*"; }
end() {
	say "RESULT: $*"
	sync
	poweroff -f
}
fail() {
	dmesg | tail -40 | sed 's/^/VMTEST: dmesg: /'
	echo "$*" | sed 's/^/VMTEST: fail: /'
	end "FAIL $(echo "$*" | head -n1)"
}
sum() { md5sum "$1" | cut -c1-32; }

# flags DEV: what the kernel's block layer took from the export's flags.
flags() {
	q=/sys/block/$1/queue
	say "flags $1: write_cache=\"$(cat $q/write_cache)\" fua=$(cat $q/fua) discard_max_bytes=$(cat $q/discard_max_bytes)" \
		"size=$(($(cat /sys/block/$1/size) * 512)) debugfs: $(tr '\n' ' ' </sys/kernel/debug/nbd/$1/flags 2>/dev/null)"
	[ "$(cat $q/write_cache)" = "write back" ] || fail "$1: write_cache is not write back"
	[ "$(cat $q/fua)" = 1 ] || fail "$1: fua is off"
	[ "$(cat $q/discard_max_bytes)" -gt 0 ] || fail "$1: discard is off"
}

# counts DEV: requests the kernel completed on the device (/sys/block/DEV/stat).
counts() {
	set -- $1 $(cat /sys/block/$1/stat)
	say "kernel counts $1: reads=$2 writes=$6 discards=${13:-0} flushes=${17:-0}"
}

# checkfiles WHAT LIST DIR: every "name md5" line of LIST is a file of DIR with that sum.
checkfiles() {
	ok=0 bad=0
	while read -r name want; do
		if [ "$(sum "$3/$name" 2>/dev/null)" = "$want" ]; then ok=$((ok + 1)); else bad=$((bad + 1)) && say "bad file $name"; fi
	done <"$2"
	say "$1: $ok intact, $bad bad"
	[ $bad = 0 ]
}

for m in crc16 crc32c_generic mbcache jbd2 ext4 nbd e1000; do insmod /lib/modules/$m.ko || fail "insmod $m"; done
ip link set lo up
ip link set eth0 up || fail "no eth0"
ip addr add 10.0.2.15/24 dev eth0
say "boot: kernel $(uname -r), up $(cut -d' ' -f1 /proc/uptime)s"

# 1. nbdmirror attach to the Primary: flags, raw I/O.
nbdmirror attach --nbd $PRIMARY /dev/nbd0 || fail "attach"
say "attach: /dev/nbd0 held by pid $(cat /sys/block/nbd0/pid)"
flags nbd0
dd if=/dev/urandom of=/tmp/raw bs=1M count=4 2>/dev/null
dd if=/tmp/raw of=/dev/nbd0 bs=1M seek=8 oflag=direct conv=fsync 2>/dev/null || fail "raw write"
dd if=/dev/nbd0 of=/tmp/back bs=1M skip=8 count=4 iflag=direct 2>/dev/null || fail "raw read"
[ "$(sum /tmp/raw)" = "$(sum /tmp/back)" ] || fail "raw read differs from the write"
say "raw: 4 MiB written (direct, fsync) and read back equal"

# 2. nbd-client as a second client of the same export: it sees nbd0's writes, and nbd0 sees its own.
nbd-client ${PRIMARY%:*} ${PRIMARY#*:} /dev/nbd1 -N r0 >/tmp/nbd-client.out 2>&1 || {
	cat /tmp/nbd-client.out
	fail "nbd-client"
}
flags nbd1
dd if=/dev/nbd1 of=/tmp/back1 bs=1M skip=8 count=4 iflag=direct 2>/dev/null || fail "nbd1 read"
[ "$(sum /tmp/raw)" = "$(sum /tmp/back1)" ] || fail "nbd1 does not see nbd0's write"
dd if=/dev/urandom of=/tmp/raw1 bs=1M count=2 2>/dev/null
dd if=/tmp/raw1 of=/dev/nbd1 bs=1M seek=16 oflag=direct conv=fsync 2>/dev/null || fail "nbd1 write"
dd if=/dev/nbd0 of=/tmp/back0 bs=1M skip=16 count=2 iflag=direct 2>/dev/null || fail "nbd0 read"
[ "$(sum /tmp/raw1)" = "$(sum /tmp/back0)" ] || fail "nbd0 does not see nbd1's write"
counts nbd1
nbd-client -d /dev/nbd1 >/dev/null 2>&1 || fail "nbd-client -d"
say "nbd-client: second client on nbd1 read nbd0's write, nbd0 read its write; disconnected"
# 2b. TLS (the host runs the Primary with --tls on): nbdmirror attach and
# nbd-client, each with a client certificate, read nbd0's write and write
# what nbd0 reads.
tlsclient() { # DEV WHAT: check DEV against nbd0 both ways
	dd if=/dev/$1 of=/tmp/back2 bs=1M skip=8 count=4 iflag=direct 2>/dev/null || fail "$2: read"
	[ "$(sum /tmp/raw)" = "$(sum /tmp/back2)" ] || fail "$2 does not see nbd0's write"
	dd if=/dev/urandom of=/tmp/raw2 bs=1M count=1 2>/dev/null
	dd if=/tmp/raw2 of=/dev/$1 bs=1M seek=24 oflag=direct conv=fsync 2>/dev/null || fail "$2: write"
	dd if=/dev/nbd0 of=/tmp/back0 bs=1M skip=24 count=1 iflag=direct 2>/dev/null || fail "nbd0 read"
	[ "$(sum /tmp/raw2)" = "$(sum /tmp/back0)" ] || fail "nbd0 does not see what $2 wrote"
}
if [ -d /tls ]; then
	nbdmirror attach --tls-certificates /tls --nbd $PRIMARY /dev/nbd2 || fail "attach with TLS"
	tlsclient nbd2 "nbdmirror attach --tls-certificates"
	nbdmirror detach /dev/nbd2 || fail "detach nbd2"
	nbd-client -cacertfile /tls/ca-cert.pem -certfile /tls/client-cert.pem -keyfile /tls/client-key.pem \
		-tlshostname ${PRIMARY%:*} ${PRIMARY%:*} ${PRIMARY#*:} /dev/nbd3 -N r0 >/tmp/nbd-client.out 2>&1 || {
		cat /tmp/nbd-client.out
		fail "nbd-client with TLS"
	}
	tlsclient nbd3 "nbd-client with TLS"
	nbd-client -d /dev/nbd3 >/dev/null 2>&1 || fail "nbd-client -d nbd3"
	say "tls: nbdmirror attach and nbd-client with client certificates read and wrote through TLS"
fi
blkdiscard -o $((8 << 20)) -l $((16 << 20)) /dev/nbd0 || fail "blkdiscard"
say "raw: blkdiscard of 16 MiB done"

# 3. ext4: files fsynced, remounted, same sums; detach.
mkfs.ext4 -F -q /dev/nbd0 || fail "mkfs.ext4"
mount -t ext4 /dev/nbd0 /mnt || fail "mount"
mkdir /mnt/before /mnt/during
: >/tmp/before
for i in 1 2 3 4 5 6 7 8; do
	dd if=/dev/urandom of=/tmp/src bs=64k count=4 2>/dev/null
	dd if=/tmp/src of=/mnt/before/b$i bs=64k conv=fsync 2>/dev/null || fail "write b$i"
	echo "b$i $(sum /tmp/src)" >>/tmp/before
done
umount /mnt || fail "umount"
echo 3 >/proc/sys/vm/drop_caches
mount -t ext4 /dev/nbd0 /mnt || fail "remount"
checkfiles "ext4 files after remount" /tmp/before /mnt/before || fail "ext4 files differ after remount"
umount /mnt || fail "umount"
counts nbd0
nbdmirror detach /dev/nbd0 || fail "detach"
[ -e /sys/block/nbd0/pid ] && fail "nbd0 still attached after detach"
say "ext4: 8 files fsynced, remounted, sums equal; detached"

# 4. Failover: files written and fsynced one by one until the host kills the Primary.
nbdmirror attach --nbd $PRIMARY --timeout 20s /dev/nbd0 || fail "attach again"
mount -t ext4 /dev/nbd0 /mnt || fail "mount for failover"
say "failover: writing"
: >/tmp/during
n=0
while :; do
	n=$((n + 1))
	[ $n -gt 600 ] && fail "the Primary was never killed"
	dd if=/dev/urandom of=/tmp/src bs=16k count=1 2>/dev/null
	dd if=/tmp/src of=/mnt/during/d$n bs=16k conv=fsync 2>/dev/null || break
	echo "d$n $(sum /tmp/src)" >>/tmp/during
	say "fsynced $n"
done
synced=$((n - 1))
say "failover: write of d$n failed after $synced fsynced files"
umount /mnt 2>/dev/null || umount -f /mnt || fail "umount of the dead device"
out=$(nbdmirror detach /dev/nbd0 2>&1) || fail "detach of the dead device: $out"
say "failover: unmounted, detach: ${out:-done}"
tries=0
until nbdmirror attach --nbd $SECONDARY /dev/nbd0 2>/tmp/attach.err; do
	tries=$((tries + 1))
	[ $tries = 1 ] && say "failover: refused by the Secondary: $(cat /tmp/attach.err)"
	[ $tries -ge 90 ] && fail "the Secondary never took the client: $(cat /tmp/attach.err)"
	sleep 1
done
say "failover: attached to the new Primary after $tries refusals"
flags nbd0
# Preen mode repairs what a crash leaves by design (the journal, the superblock's
# free counts) and stops with exit 4 at anything else; then it must be clean.
e2fsck -fp /dev/nbd0 >/tmp/fsck1 2>&1
rc=$?
say "failover: e2fsck -fp exit $rc: $(tr '\n' ' ' </tmp/fsck1)"
[ $rc -le 1 ] || fail "e2fsck -fp: $(cat /tmp/fsck1)"
e2fsck -fn /dev/nbd0 >/tmp/fsck2 2>&1 || fail "e2fsck -fn after repair: $(cat /tmp/fsck2)"
mount -t ext4 /dev/nbd0 /mnt || fail "mount on the new Primary"
checkfiles "files written before the failover phase" /tmp/before /mnt/before || fail "files of before the failover lost"
checkfiles "files fsynced before the kill" /tmp/during /mnt/during || fail "fsynced files lost"
say "failover: $synced files fsynced before the kill, all intact on the new Primary"

# 5. The new Primary takes writes, FUA and TRIM too.
dd if=/dev/urandom of=/mnt/after bs=64k count=4 conv=fsync 2>/dev/null || fail "write on the new Primary"
fstrim -v /mnt >/tmp/fstrim 2>&1 || fail "fstrim: $(cat /tmp/fstrim)"
umount /mnt || fail "umount"
counts nbd0
nbdmirror detach /dev/nbd0 || fail "detach"
end PASS
