//! A BPF ring buffer read in place, as the kernel lays it out (and libbpf
//! reads it): a consumer page the reader writes its position to, a
//! producer page, and the data pages mapped twice in a row so that a
//! record that wraps reads as one slice.
//!
//! The reader's position is published to the kernel once per drain (and
//! every [`PUBLISH_BYTES`] within a long one), not after every record: the
//! consumer page is read by `bpf_ringbuf_reserve` on the producing CPU, so
//! a store to it per record (what aya's `RingBuf` does as each item is
//! dropped) moved its cache line between the CPUs at every record of a
//! flood. The bytes read and not yet published are still taken from the
//! kernel's view of the ring's room: at most [`PUBLISH_BYTES`].
use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicUsize, Ordering},
};

use aya::maps::MapData;

/// A record the producer has reserved and not committed yet.
const BUSY: u32 = 1 << 31;
/// A record the producer gave up (skipped by the reader).
const DISCARD: u32 = 1 << 30;
/// Each record's header: its length and the two bits, then 4 bytes.
const HEADER: usize = 8;

/// Within one drain, the position is published at least after this many
/// bytes: what a drain holds back of the ring's room (an 8 MiB ring by
/// default; a batch of exec records is up to 4 MB).
pub(crate) const PUBLISH_BYTES: usize = 64 << 10;

/// One mapping, unmapped when dropped.
struct Mapping {
    at: NonNull<libc::c_void>,
    len: usize,
}

impl Mapping {
    fn new(
        fd: BorrowedFd,
        len: usize,
        prot: libc::c_int,
        offset: usize,
    ) -> std::io::Result<Mapping> {
        // SAFETY: a new shared mapping of the map's fd at a kernel-chosen
        // address; nothing else refers to that memory.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let at = NonNull::new(at).ok_or_else(|| std::io::Error::other("mmap gave address 0"))?;
        Ok(Mapping { at, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.at.as_ptr(), self.len) };
    }
}

/// One ring buffer map, read in place.
pub(crate) struct Ring {
    map: MapData,
    /// The consumer page (read-write): the position the kernel sees.
    consumer: Mapping,
    /// The producer page, then the data pages twice (read-only).
    producer: Mapping,
    page: usize,
    /// The data's size less one (a power of two).
    mask: usize,
    /// Read up to here.
    pos: usize,
    /// What the kernel was last told.
    published: usize,
}

// SAFETY: the mappings are owned by the ring and only read through `&mut
// self` (the reader's thread); nothing aliases them in this process.
unsafe impl Send for Ring {}

impl Ring {
    pub(crate) fn new(map: MapData) -> std::io::Result<Ring> {
        let size = map
            .info()
            .map_err(|e| std::io::Error::other(format!("ring buffer info: {e}")))?
            .max_entries() as usize;
        if !size.is_power_of_two() {
            return Err(std::io::Error::other(format!(
                "ring buffer of {size} bytes: not a power of two"
            )));
        }
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| std::io::Error::other("no page size"))?;
        let fd = map.fd().as_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + 2 * size, libc::PROT_READ, page)?;
        let mut ring = Ring {
            map,
            consumer,
            producer,
            page,
            mask: size - 1,
            pos: 0,
            published: 0,
        };
        ring.pos = ring.consumer_pos().load(Ordering::Acquire);
        ring.published = ring.pos;
        Ok(ring)
    }

    fn consumer_pos(&self) -> &AtomicUsize {
        // SAFETY: the consumer page starts with the kernel's `consumer_pos`
        // (an unsigned long, page-aligned), mapped as long as `self` lives.
        unsafe { &*self.consumer.at.as_ptr().cast::<AtomicUsize>() }
    }

    fn producer_pos(&self) -> &AtomicUsize {
        // SAFETY: as `consumer_pos`: the producer page starts with `producer_pos`.
        unsafe { &*self.producer.at.as_ptr().cast::<AtomicUsize>() }
    }

    /// The data pages, twice over.
    fn data(&self) -> &[u8] {
        // SAFETY: the producer mapping is one page then twice the data. The
        // kernel writes only records not yet committed, past what is read
        // here (a committed record's bytes stay as they are until the
        // position is published past them), as aya's reader relies on too.
        unsafe {
            std::slice::from_raw_parts(
                self.producer.at.as_ptr().cast::<u8>().add(self.page),
                2 * (self.mask + 1),
            )
        }
    }

    /// Hand each committed record (its bytes, in place) to `f`, up to `max`
    /// of them; how many, and the bytes they took in the ring (headers
    /// included, each rounded up to 8). What was read is published to the
    /// kernel before this returns.
    pub(crate) fn read(&mut self, max: usize, f: impl FnMut(&[u8])) -> (usize, usize) {
        let view = View {
            consumer: self.consumer_pos(),
            producer: self.producer_pos(),
            data: self.data(),
            mask: self.mask,
        };
        let mut at = (self.pos, self.published);
        let r = view.read(&mut at, max, f);
        (self.pos, self.published) = at;
        r
    }
}

/// The ring's shared words and data, as the reader sees them.
struct View<'a> {
    consumer: &'a AtomicUsize,
    producer: &'a AtomicUsize,
    /// The data, twice over (a record that wraps reads as one slice).
    data: &'a [u8],
    /// The data's size less one (a power of two).
    mask: usize,
}

impl View<'_> {
    /// [`Ring::read`], from (read up to, published) `at`.
    fn read(
        &self,
        at: &mut (usize, usize),
        max: usize,
        mut f: impl FnMut(&[u8]),
    ) -> (usize, usize) {
        let start = at.0;
        let mut n = 0;
        let mut prod = self.producer.load(Ordering::Acquire);
        while n < max {
            if at.0 == prod {
                // Caught up with what was there: look again once (records
                // committed while these were read), after telling the kernel.
                self.publish(at);
                prod = self.producer.load(Ordering::Acquire);
                if at.0 == prod {
                    break;
                }
            }
            let off = at.0 & self.mask;
            // (`off` is 8-aligned: positions advance by multiples of 8.)
            let Some(word) = self.data.get(off..off + 4) else {
                break;
            };
            // SAFETY: 4 bytes in the data, 4-aligned (the mapping is
            // page-aligned, `off` a multiple of 8): the header's length word.
            let header = unsafe { &*word.as_ptr().cast::<AtomicU32>() };
            // (Acquire: the record's bytes are visible once its busy bit is
            // clear; the kernel commits it with a full barrier.)
            let h = header.load(Ordering::Acquire);
            if h & BUSY != 0 {
                break;
            }
            let len = (h & !(BUSY | DISCARD)) as usize;
            let Some(body) = self.data.get(off + HEADER..off + HEADER + len) else {
                // A length past the data: not the kernel's layout. Nothing
                // more is read from this ring.
                break;
            };
            if h & DISCARD == 0 {
                f(body);
                n += 1;
            }
            at.0 += (HEADER + len).next_multiple_of(8);
            if at.0 - at.1 >= PUBLISH_BYTES {
                self.publish(at);
            }
        }
        self.publish(at);
        (n, at.0 - start)
    }

    /// Tell the kernel the records up to `at.0` are read (their room is free).
    fn publish(&self, at: &mut (usize, usize)) {
        if at.1 != at.0 {
            self.consumer.store(at.0, Ordering::Release);
            at.1 = at.0;
        }
    }
}

impl AsFd for Ring {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.fd().as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring as the kernel lays it out: the data twice over (a record
    /// written across the end is in both copies), the two positions.
    struct Fake {
        consumer: AtomicUsize,
        producer: AtomicUsize,
        data: Vec<u8>,
        size: usize,
        /// Where the next record goes (the producer's reserve position).
        next: usize,
    }

    impl Fake {
        fn new(size: usize) -> Fake {
            Fake {
                consumer: AtomicUsize::new(0),
                producer: AtomicUsize::new(0),
                data: vec![0; 2 * size],
                size,
                next: 0,
            }
        }

        fn put(&mut self, at: usize, b: u8) {
            let i = at & (self.size - 1);
            self.data[i] = b;
            self.data[i + self.size] = b;
        }

        /// A record written (not yet visible: see `commit`), its header's
        /// bits as given.
        fn write(&mut self, body: &[u8], bits: u32) {
            let at = self.next;
            let h = (body.len() as u32 | bits).to_le_bytes();
            for (k, b) in h.iter().chain(&[0u8; 4]).chain(body).enumerate() {
                self.put(at + k, *b);
            }
            self.next += (HEADER + body.len()).next_multiple_of(8);
        }

        /// What was written is committed: the producer position moves.
        fn commit(&self) {
            self.producer.store(self.next, Ordering::Release);
        }

        fn view(&self) -> View<'_> {
            View {
                consumer: &self.consumer,
                producer: &self.producer,
                data: &self.data,
                mask: self.size - 1,
            }
        }
    }

    fn body(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|k| (i * 31 + k) as u8).collect()
    }

    #[test]
    fn records_are_read_in_place_in_order_and_the_position_published_once() {
        let mut r = Fake::new(4096);
        r.write(&body(1, 20), 0);
        r.write(&body(2, 13), DISCARD);
        r.write(&body(3, 40), 0);
        r.commit();
        let mut at = (0, 0);
        let mut seen = Vec::new();
        let v = r.view();
        let (n, bytes) = v.read(&mut at, 100, |b| {
            // Nothing published while the drain reads.
            assert_eq!(v.consumer.load(Ordering::Relaxed), 0);
            seen.push(b.to_vec());
        });
        assert_eq!(
            seen,
            vec![body(1, 20), body(3, 40)],
            "the discarded one skipped"
        );
        assert_eq!(n, 2);
        assert_eq!(bytes, 32 + 24 + 48);
        assert_eq!(at, (bytes, bytes));
        assert_eq!(
            r.consumer.load(Ordering::Relaxed),
            bytes,
            "published at the end"
        );
        // Nothing more: nothing read, nothing published again.
        assert_eq!(r.view().read(&mut at, 100, |_| panic!("no record")), (0, 0));
    }

    #[test]
    fn a_record_not_committed_stops_the_drain_and_a_batch_stops_at_its_most() {
        let mut r = Fake::new(4096);
        r.write(&body(1, 8), 0);
        r.write(&body(2, 8), BUSY);
        r.write(&body(3, 8), 0);
        r.commit();
        let mut at = (0, 0);
        let mut seen = 0;
        assert_eq!(r.view().read(&mut at, 100, |_| seen += 1), (1, 16));
        assert_eq!(r.consumer.load(Ordering::Relaxed), 16, "up to the busy one");
        let mut r = Fake::new(4096);
        for i in 0..10 {
            r.write(&body(i, 8), 0);
        }
        r.commit();
        let mut at = (0, 0);
        assert_eq!(r.view().read(&mut at, 4, |_| {}), (4, 64));
        assert_eq!(r.view().read(&mut at, 100, |_| {}), (6, 96));
    }

    #[test]
    fn a_record_across_the_end_of_the_ring_reads_whole() {
        let mut r = Fake::new(4096);
        // The reader and writer near the end: the next record wraps.
        r.next = 4096 - 16;
        r.commit();
        r.consumer.store(r.next, Ordering::Relaxed);
        r.write(&body(7, 100), 0);
        r.commit();
        let mut at = (4096 - 16, 4096 - 16);
        let mut seen = Vec::new();
        assert_eq!(
            r.view().read(&mut at, 10, |b| seen.push(b.to_vec())),
            (1, 112)
        );
        assert_eq!(seen, vec![body(7, 100)]);
        assert_eq!(r.consumer.load(Ordering::Relaxed), 4096 - 16 + 112);
    }

    #[test]
    fn a_long_drain_holds_back_at_most_a_publishing_step_of_the_rings_room() {
        let size = 1 << 20;
        let mut r = Fake::new(size);
        let len = 1000;
        let step = (HEADER + len).next_multiple_of(8);
        for i in 0..500 {
            r.write(&body(i, len), 0);
        }
        r.commit();
        let mut at = (0, 0);
        let v = r.view();
        let mut handed = 0;
        let mut most = 0;
        let (n, _) = v.read(&mut at, 1000, |_| {
            // (What this record's predecessors took, not yet told.)
            most = most.max(handed - v.consumer.load(Ordering::Relaxed));
            handed += step;
        });
        assert_eq!(n, 500);
        assert!(most < PUBLISH_BYTES, "{most} bytes held back");
        assert!(
            most + step >= PUBLISH_BYTES,
            "published in steps, not per record: {most}"
        );
    }

    #[test]
    fn records_committed_while_a_drain_reads_are_read_by_it() {
        let mut r = Fake::new(4096);
        r.write(&body(1, 8), 0);
        r.commit();
        // A second record written, committed only while the first is handled.
        r.write(&body(2, 8), 0);
        let next = r.next;
        let v = r.view();
        let mut at = (0, 0);
        let mut seen = 0;
        let (n, _) = v.read(&mut at, 10, |_| {
            seen += 1;
            v.producer.store(next, Ordering::Release);
        });
        assert_eq!(n, 2);
        assert_eq!(v.consumer.load(Ordering::Relaxed), next);
    }
}
