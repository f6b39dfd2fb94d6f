package sim

// KnownBugs are the options that keep the schedules away from bugs still
// open in the replication package, so that the default suite stays green
// while they are open. Each was found by this simulation; the seeds below
// fail with the kind drawn again, e.g.
//
//	go test ./replication/sim -run TestSim -with promote -seed 185
//
// -all-faults draws every kind and turns WaitBitmap off.
func KnownBugs() Options {
	// WaitBitmap: a node that crashed within the bitmap's save interval
	// of going apart from its peer had no bitmap file, which loadBitmap
	// read as "never apart". It now marks every record its journal holds
	// then, and -with crash -wait-bitmap=false passes as often as with it.
	return Options{Skip: knownKinds(), WaitBitmap: true}
}

// knownKinds are the step kinds KnownBugs never draws. The seeds fail
// with -with KIND on a loaded machine; the interleaving is not fixed, so a
// seed fails most runs, not all.
func knownKinds() map[Kind]bool {
	return map[Kind]bool{
		// JournalFail and DiskFail are drawn by default. A node whose
		// disk or journal fails detaches it (--on-io-error detach); the
		// settle heals it as an operator does (heal.go): the old disk is
		// attached again (AttachDisk, not fresh: its journal and meta
		// still describe it), a Diskless Primary pulls its peer's data
		// onto it, and is restarted on it only if its peer does not
		// serve it; a Secondary holding newer data than its Primary is
		// the SyncSource (the Primary is demoted, never the newer side
		// discarded). Seeds 52, 88, 105, 136, 168, 187, 213, 240, 245,
		// 291 ("resync") and 8, 9, 27, 253 ("acked") pass. The kinds
		// found product bugs, fixed: a Diskless Primary served through
		// a peer lacking what its disk held (seeds 228, 680, 1681); a
		// write only a failed disk held was acknowledged, and writes
		// through the peer while marks said it lacked others (1158); an
		// old disk attached after writes went through the peer claimed
		// to be in step with it (713, 2224), and, taken as fresh for it,
		// threw away writes only it held (11187); a fresh disk became
		// the source of a GenZero peer (713, 1670); a node promoted
		// alone stayed in a generation its peer had moved on from
		// (8917). The simulation's own: a crashed Primary whose disk
		// failed served from its old disk when its failover was refused
		// (2841). Seeds 1-13300 with -with journal-fail,disk-fail pass,
		// 24 at a time. Seen once each in earlier rounds and not since,
		// passing alone: 1118 (no disk fault in it: a split brain seen
		// connected by a node whose link was delayed; 10 of 10 runs
		// alone pass) and 11930 (a crash failover, no disk fault: images
		// differ; 6 of 6 alone pass).
		// Crash is drawn by default. Its failures were fixed (two
		// Primaries, seed 804; a Primary StandAlone after the operator's
		// word, seeds 5648, 8409) or were the leak check's own (seeds 745,
		// 1265, 1740, 3600: a write-async to the crashed node answered on
		// its own goroutine just after the instant the check looked; the
		// requests now get the goroutines' grace, see unanswered). Seed
		// 15463 (a leak without a crash, at load 36) is not explained by
		// that, and was not seen again.
		// A power loss: a node now marks the records its peer holds past
		// the seqs it may have lost (LostFrom; seed 4444 passes), and a
		// FLUSH acknowledged while the link was down no longer counts as
		// durable on the peer in the model (-with promote,power-loss:
		// seed 2290 passes). Seeds 1-4000 with -with power-loss -strict
		// pass; 4001-12000 failed only in a load spike (liveness and
		// resyncs past 5 s, every seed passing alone), but one rerun of
		// 10001-10800 ended with images that differ and both nodes in
		// sync ("identical", seed 10752: a power loss of the Secondary
		// with an async write of block 2 in flight; the Primary holds it,
		// the Secondary zeros), not reproduced in 150 runs of it 24 at
		// once. Another rerun found a split brain merged after a power
		// loss of the node promoted in it ("split-brain", seed 10141:
		// switchover, link reset, split brain, then a power loss of the
		// new Primary; the old one became its SyncSource without
		// DiscardMyData), which passes alone. With the disk kinds drawn
		// too, seeds 20556, 20595, 22017, 22190 and 22347 failed among
		// 20001-26000 run 6 at a time ("identical", "acked"). 20595
		// failed every run alone: the disk of Primary a fails, a writes
		// through b, loses power, comes back on its old disk, and a
		// split brain follows; the settle discarded b, the only node
		// holding those writes. It now discards a node back on a disk
		// that had failed (stale), as with a crash (seed 35077, default
		// draw), and 20595 passes 5 of 6 runs; the sixth found b
		// connected after the split brain without DiscardMyData
		// ("split-brain"). The others pass alone. Later rounds, 16 to 24
		// at a time: seeds 10001-16000, 20001-23000 and 40001-46000 pass
		// but for two with no power loss in their schedules. 41730 (a
		// fresh disk and a peer whose discard lingered, both StandAlone)
		// is fixed (giveIn). So is 42700 (1 run in 48 failed; 0 in 48
		// after): the disk of Primary a failed under a write in place,
		// which completed through b; the link dropped before b took a's
		// Diskless announcement (which moves b to a's new generation and
		// marks everything), and a crashed. Back on its old disk, with
		// meta saved before the fault, a shared b's generation, and its
		// journal reported the write torn: a marked it, and as the source
		// copied its old bytes over the write b held. A write through the
		// peer alone now replies once the peer is known to follow
		// (followGate), EIO if the link ends first. Seeds 1-1000
		// failed twice in three runs before that fix (253, 839; 32 runs
		// of each alone, 16 at a time, pass). After it, seeds 1-8000 and
		// 40001-46000 passed 24 at a time, and 1-1000 four times more, one
		// of them beside the replication package's tests: power losses
		// are drawn by default. Since then a power loss keeps a random
		// part of the disk's unsynced blocks (the kernel's write-back) and
		// a third of them take both nodes at once; the draws changed every
		// schedule after a power loss, so the seeds above name other
		// schedules now. With the journal of before its activity set was
		// always published, 39 of seeds 1-3000 failed, 35 of them with
		// images that differ after the resync (write-back put on a disk
		// writes its journal lost, in regions nobody marked); a Primary
		// restarted with both lost its writes to a peer promoted meanwhile
		// (seed 1278: it wrote in the generation it shared with the peer;
		// it now starts one of its own at its first write apart). Then,
		// among seeds 1-10000: a journal-tail resync sent records older
		// than bytes write-back had kept on the source's disk and cleared
		// the marks recovery had set (4923; meta.TailFrom now keeps the
		// tail off them); a node started Primary kept an earlier resolve
		// --discard-my-data and became its peer's target (469; the word
		// is now taken back); the simulation's operator restarted as
		// Primary a node whose disk had failed while it wrote through its
		// peer (5365, 9189; the peer that followed it serves now). After
		// those, seeds 1-10000 pass 16 at a time but for 1895 ("acked",
		// once; 8 of 8 alone pass). Later: a Primary's image read while
		// a write was in flight was checked against its ack (3567, the
		// simulation's own); a Secondary's replay left a journaled
		// write it had acknowledged behind a write in place that never
		// landed (14466; the journal now journals a large write over a
		// record the synced disk may lack); a node restarted on a disk
		// that had failed was promoted as UpToDate (11057, 19439; it is
		// recorded Outdated); a process crash copied the disk after the
		// file system (13452, the simulation's own). Then seeds 1-22000
		// failed twice: 19733 ("acked", 6 runs of 8, also before those
		// changes: a Secondary told to discard its data while in step
		// kept the word after it followed its Primary's disk out, and
		// gave up the only copy of what was written through it; the word
		// now goes when it follows) and 21235 ("split-brain", once; 8 of
		// 8 alone pass). Then 22017 ("acked", every run: the operator
		// failed over to a node whose disk had failed while it wrote
		// through its peer, its meta.json on the failing device too;
		// the failover now counts either node's writes since the crashed
		// Primary was last in sync). Seeds 1-88000, 16 at a time, with
		// the logs of failing seeds kept: 43752, 59953, 63382 and 72402
		// ("split-brain", each once: a node showed Connected a link whose
		// handshake it had read just before the split-brain step's cut,
		// while its peer saw the reset; a merge now takes both ends
		// Connected), 81164 ("acked", 1 run in 16: a Diskless Primary met
		// a peer that had lost the tail of its journal in a power loss,
		// in sync on Hellos that showed no marks; a first fix refused a
		// peer whose journal stops short of its own, see 85520 below) and
		// 49710 ("acked", once,
		// 0 of 48 alone: a write made through the peer as the Primary's
		// journal failed, after a resync ended, was missing from the disk
		// the Primary then pulled from that peer; not explained). After
		// those, seeds 1-44000 pass. A second run of 44001-88000 failed
		// three times ("acked", once each, 0 of 16 alone): 85520 (the
		// refusal for 81164 counted seqs of writes that failed on both
		// nodes; it now counts what the peer acknowledged, peerSeq), and
		// 46243 and 83922, of 49710's kind: a write in place with FUA right
		// after the Primary's journal and meta.json failed, acknowledged
		// through the peer, missing later. The three were a bitmap resync
		// pass that sent a run read from the Primary's disk behind a write
		// whose segment write had failed there: the run undid the write on
		// the peer, and its ack cleared the last mark before the write's
		// sync ack came, so the write succeeded through the peer. A
		// resync now stops once a write its link carried fails in the
		// journal (lostUnder); 3 runs of the three seeds in 960 failed
		// before, 0 in 1920 after. The next sweep of 44001-88000 failed
		// on 77962 ("acked", about 1 run in 100 alone): a Primary that
		// crashed after its resync's target ended the resync came back
		// in the target's generation, its bitmap generation saved, and
		// wrote alone in it; the target, promoted, met it as a node
		// behind; open: a first fix that moved every Primary on passed
		// seeds 1-44000 but not make stress (a link reset again and again
		// through resyncs pushed the target's generation out of the
		// history, a false split brain), and a second (moving on only a
		// Primary that met its peer in its generation, sent or got
		// SyncDone, or started) failed seeds 24838, 28896 and 40008 of
		// 1-44000 nearly every run; both were reverted. With that first fix,
		// 44001-88000 failed once, on 46349 ("identical", 0 of 96 alone
		// on that build and on the one before: a Primary whose disk
		// failed under a switchover's read journaled a write before the
		// detach failed its journal, and the replay at its disk's attach
		// left that block different from the promoted peer's, unmarked;
		// an attach now marks what its replay writes, which is the likely
		// fix, not confirmed: the seed never failed alone). 77962 was
		// fixed by saving DoneSent in meta.json before the SyncDone goes
		// out: a restarted Primary moves on at its first write apart
		// only where its target may have reached its generation (13 of
		// 800 runs failed before, 0 of 800 after; 24838, 28896, 40008
		// and 18437 pass). 19281 ("acked", about 1 run in 20 alone) was
		// the operator's: a switchover's demotion met the Primary's
		// journal and meta.json failing, the Diskless node could not be
		// promoted back, and the operator left it the client's Primary;
		// restarted on its old disk (which its failed meta.json could not
		// record Outdated) and promoted at the settle, it met its peer,
		// which held what it wrote through it, as a split brain, and the
		// peer gave in. The operator now promotes the peer (0 of 128).
		// The sweep of 1-88000 after those two failed five times: 7132
		// ("acked", 1 run in 32: the hand-over promoted a peer whose
		// generation only matched because the node failed as a
		// Secondary, its disk holding writes the peer lacked; it now
		// needs the peer to have followed a Diskless Primary, 0 of 64);
		// and four older ones, open: 20341 ("acked", 1 run in 32 on the
		// build before both: a Primary whose disk failed as its resync's
		// source crashed, and the operator failed over to a peer lacking
		// a FUA write and a trim it had acknowledged, which it does only
		// after seeing the Primary in sync since its last acknowledged
		// write; not explained), 30539 ("identical", 1 in 32 on both:
		// writes the link carried as the Primary's journal failed, each
		// failed to its client, stayed on the peer, unmarked once the
		// Primary restarted on its disk; not explained), 12806
		// ("identical") and 56382 ("resync"), 0 of 32 alone each. 20341
		// was the product's status: a Primary whose disk failed as its
		// resync's source showed its target UpToDate and the pair in
		// sync (nothing marked) until the link closed, and read through
		// it; the target is now Inconsistent from the failure on (4 of
		// 160 runs failed before, 0 of 400 after). A third sweep, on
		// that build, failed two older seeds, both "acked", open and not
		// read: 40221 (0 of 32 alone, there and on the build before)
		// and 42687 (0 of 32 there, 2 of 32 on the build before); each
		// schedule fails a disk and loses power on a node that crashes
		// too. The next sweep of 1-16000 failed 10552 once ("resync" and
		// "identical", 0 of 32 alone on that build and the one before):
		// the simulation's own. The disk of b, a resync's target, failed
		// at the last step; the settle cleared the fault while an apply
		// that had met it was in flight, and the heal, seeing b's disk
		// still Inconsistent, found nothing to attach; the apply failed a
		// moment later, b went Diskless and stayed so. The heal now waits
		// for a node whose fault met I/O to detach first. 42687 and
		// 40221 fail often under 16 runs at a time on 2 cores (52 and 6
		// of 320 on 251b4f6), and both were the product's. 42687: a
		// FLUSH whose journal sync met the disk's fault succeeded
		// through the peer without waiting for its follow (the gate held
		// writes only); both nodes lost power before the peer took the
		// announcement, and the old disk, restarted on, lacking the
		// flushed write, synced over it (0 of 320 after). 40221: a
		// Secondary that followed a Diskless Primary met on a new link
		// counted its bitmap from its own older generation, not from the
		// one the old disk holds; the old disk, restarted on, then met it
		// as a split brain, and the operator's word gave up the copy of
		// what the Primary wrote through it (11 of 320 with the first
		// fix alone, 0 of 320 after). A sweep of 1-88000 on that code
		// failed only 81325 ("acked", 1 of 160 there and on 251b4f6):
		// the simulation's own; its heal restarted a Diskless Primary on
		// its old disk without counting it stale, and the split brain's
		// word gave up the promoted peer's copy of what it had written
		// through it (0 of 640 after).
	}
}

// KnownOpen are invariants whose violations TestSim reports as known and
// open rather than failing, with why; -strict fails them too.
var KnownOpen = map[string]string{
	// Empty: InvHonesty was here (Status showed a failing link
	// Connected/UpToDate while writes were marked out of sync) until a
	// connected peer was no longer reported UpToDate with marks. Images
	// that differed only under parallel runs were excused too (about 1
	// seed in 2000: a link that timed out under load during a journal-tail
	// resync, whose regions the tail had cleared though the peer never
	// acknowledged them; the next tail started past them and reported the
	// peer UpToDate) until the tail cleared its regions in goLive and a
	// record the link lost marked its region again.
}
