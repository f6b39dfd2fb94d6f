#!/usr/bin/env bash
# import-history.sh: writes bench/results/history.md from the results files
# the repository held in bench/results/ and bench/results/against/ until raw
# results left it (commit 10567b9 still has them): one line per run, oldest
# first (bin/bench --add-history), naming each COMMIT:PATH (git show prints it
# again), with the subject of the commit that added it as its note, and for
# the runs the README discussed, what it said of them. Run from the
# repository root; it replaces history.md.
set -euo pipefail
at=10567b9
out=bench/results

# remark prints what the README's Performance section said about a run.
remark() {
	case "$1" in
	20261127-012540) cat <<'EOF'
Before and after the link's polling: pair C 4k QD1 1.59x (p50 222 -> 129 us), write + FLUSH 1.30x, QD32 1.13x, randread 0.91x (reads do not touch the link; IOPS ranges overlap); standalone, whose path did not change, 0.96x-1.02x. Pair C 0.65x of standalone at QD32, its QD1 p50 standalone's + 37 us.
EOF
		;;
	20261127-030556 | 20261127-033338) cat <<'EOF'
Measured a Secondary that kept its disk out of the page cache, since reverted (its large writes and resync got slower).
EOF
		;;
	20261127-035704) cat <<'EOF'
A Primary's link reader waits for the write's own journaling and applying before it polls for the ack: pair C 4k QD1 p50 151 -> 134 us, QD32 1.01x, write + FLUSH 0.94x (IOPS ranges overlap); pair C 0.66x of standalone at QD32, its QD1 p50 standalone's + 50 us.
EOF
		;;
	20261127-040835) cat <<'EOF'
Full run of that build: pair C 0.63x of standalone at 4k QD32, QD1 p50 standalone's + 51 us (90 vs 140 us).
EOF
		;;
	20261127-055054) cat <<'EOF'
A lone write leaves its record to the Primary's polling link reader, which sends it while the writer journals and applies, and every poll yields its core between tries: pair C 4k QD1 p50 116 vs 125 us, write + FLUSH p50 216 vs 239 us, QD32 1.05x; pair C's QD1 p50 standalone's + 14 us and 0.59x of standalone at QD32 (the older build: + 31 us, 0.55x).
EOF
		;;
	20261127-055830) cat <<'EOF'
Pair C QD1 p50 90 vs 83 us standalone (+ 7; per rep + 20, - 2, + 7), 0.60x of standalone at QD32 (per rep 0.74x, 0.60x, 0.62x), write + FLUSH 0.54x; standalone 0.99x of nbdkit at QD1, 1.04x at QD32, 1.17x at randread, 0.24x at 1 MiB.
EOF
		;;
	20261127-062027) cat <<'EOF'
On a slower machine (nbdkit's QD1 p50 196 us against 91 in the run before): pair C QD1 p50 159 vs 100 us standalone (+ 59; per rep + 81, + 68, + 31), 0.58x of standalone at QD32, write + FLUSH 0.81x; standalone 1.77x of nbdkit at QD1, 1.22x at QD32.
EOF
		;;
	20261127-070931) cat <<'EOF'
A Secondary keeps small writes out of large cached folios: pair C 4k QD32 1.14x (0.72x of standalone), QD1 p50 112 vs 125 us (standalone's + 13 us), 1M stream 0.93x (ranges 168-226 vs 215-234), write + FLUSH at QD1 0.75x (p50 257 vs 198 us): with its apply cheaper, the Secondary's reader more often stops polling before the FLUSH's barrier comes and sleeps for it (in a probe 16.1k-16.9k of its reads slept against 10.6k-12.5k).
EOF
		;;
	20261127-075447) cat <<'EOF'
A --peer-poll of 300us won write + FLUSH back in probes but not side by side (write + FLUSH 1.00x, 4k QD1 0.85x); not the default.
EOF
		;;
	20261127-072420 | 20261127-080209) cat <<'EOF'
One of the two full runs of the build (40 minutes apart) that made the README's table until this history replaced it; the machine's speed changed between them (nbdkit's 4k QD1 p50 115 and 68 us). A 1 MiB stream ran at 0.57x / 0.77x of the device: the journal is bounded, so every byte reaches the device twice within seconds.
EOF
		;;
	esac
}

go -C bench build -o ../bin/bench .
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -f "$out/history.md"
git ls-tree -r --name-only "$at" bench/results | grep -E '^bench/results/(against/)?[0-9]{8}-[0-9]{6}\.json$' |
	awk -F/ '{ print $NF, $0 }' | sort | cut -d' ' -f2 |
	while read -r f; do
		stamp=$(basename "$f" .json)
		added=$(git log --format=%h --diff-filter=A "$at" -- "$f" | tail -1)
		note="$(git log -1 --format=%s "$added" | sed 's/^bench: //') (commit $added)"
		extra=$(remark "$stamp")
		[ -z "$extra" ] || note="$note. README: $extra"
		git show "$at:$f" >"$tmp/run.json"
		bin/bench --add-history "$tmp/run.json" --raw-name "$at:$f" --note "$note" --out "$out"
	done
