//! The log file, written behind: once on disk, its pages leave the page
//! cache.
//!
//! The traffic log is written and hardly ever read back, yet the kernel
//! keeps every page of it cached until memory runs short, so each new page
//! of log takes a page of free memory. On a virtual machine that hands free
//! memory back to its host (free page reporting, as on this project's
//! benchmark machine), memory that has not been touched for a while is
//! slow to touch again: appending a gigabyte there took 4.5 s of CPU at
//! such times, against 0.3 s when the same few megabytes are reused. So
//! every [`STEP`] bytes the writer starts writing the newest step out to
//! disk, waits for the step before it (started a step earlier, so usually
//! long done) and drops that one from the cache. The log then reuses about two steps of memory
//! however long it grows, and it leaves the rest to the node's store. The
//! price: a disk that falls more than a step behind the log holds the
//! writer up (and, once the log's buffer is full, the node), as the page
//! cache's writeback limits would later anyway.
//!
//! Off Linux this is a plain file.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

/// Bytes written between writing out and dropping.
pub const STEP: u64 = 8 << 20;

/// An append-only file whose written-out pages are dropped from the cache.
pub struct Behind {
    file: File,
    step: u64,
    /// Written since the last [`Behind::shed`].
    pending: u64,
    /// The file's end at the last shed: writing out began up to here.
    started: u64,
    /// Dropped from the cache up to here.
    dropped: u64,
}

impl Behind {
    /// Over `file`, opened for appending, shedding every `step` bytes.
    pub fn new(mut file: File, step: u64) -> Behind {
        // What the file held before is left as it is.
        let end = end(&mut file).unwrap_or(0);
        Behind {
            file,
            step,
            pending: 0,
            started: end,
            dropped: end,
        }
    }

    /// Drops the range written out since the last shed but one, and starts
    /// writing out what came since the last. Failures change nothing but
    /// what stays cached.
    fn shed(&mut self) {
        self.pending = 0;
        let Ok(end) = end(&mut self.file) else { return };
        if end < self.started {
            // Truncated under us (a log rotation by copying): start over.
            self.started = end;
            self.dropped = end;
            return;
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = self.file.as_raw_fd();
            // (Offsets are cast to whatever each call takes: `off_t` is 32
            // bits on some targets.)
            let old = (self.dropped, self.started - self.dropped);
            let new = (self.started, end - self.started);
            // SAFETY: system calls on a descriptor this owns, with no
            // memory passed; their errors are ignored on purpose.
            unsafe {
                if old.1 > 0 {
                    // Waits until that range is on disk (its writing out
                    // began at the last shed), so its pages are clean.
                    libc::sync_file_range(
                        fd,
                        old.0 as _,
                        old.1 as _,
                        libc::SYNC_FILE_RANGE_WAIT_BEFORE
                            | libc::SYNC_FILE_RANGE_WRITE
                            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                    );
                    libc::posix_fadvise(fd, old.0 as _, old.1 as _, libc::POSIX_FADV_DONTNEED);
                }
                // (A length of 0 would mean "to the end of the file".)
                if new.1 > 0 {
                    libc::sync_file_range(fd, new.0 as _, new.1 as _, libc::SYNC_FILE_RANGE_WRITE);
                }
            }
        }
        self.dropped = self.started;
        self.started = end;
    }
}

/// The file's length, whoever else appended to it (or truncated it).
fn end(file: &mut File) -> std::io::Result<u64> {
    file.seek(SeekFrom::End(0))
}

impl Write for Behind {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.pending += n as u64;
        if self.pending >= self.step {
            self.shed();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(path: &std::path::Path) -> File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
    }

    fn chunk(i: usize) -> Vec<u8> {
        format!("line {i:06} {}\n", "x".repeat(i % 200)).into_bytes()
    }

    #[test]
    fn the_file_gets_every_byte_in_order_through_sheds_and_a_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.log");
        std::fs::write(&path, b"before\n").unwrap();
        let mut w = Behind::new(append(&path), 4096);
        assert_eq!((w.started, w.dropped), (7, 7));
        let mut want = b"before\n".to_vec();
        for i in 0..2000 {
            w.write_all(&chunk(i)).unwrap();
            want.extend(chunk(i));
        }
        w.flush().unwrap();
        assert!(w.dropped > 4096, "sheds happened: {}", w.dropped);
        assert_eq!(std::fs::read(&path).unwrap(), want);

        // Truncated behind its back (`logrotate`'s copytruncate).
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        let mut want = Vec::new();
        for i in 0..500 {
            w.write_all(&chunk(i)).unwrap();
            want.extend(chunk(i));
        }
        w.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), want);
        assert!(w.started <= want.len() as u64 && w.dropped <= w.started);
    }

    /// Pages of `file` in the page cache, by `mincore` over a mapping.
    #[cfg(target_os = "linux")]
    fn resident(path: &std::path::Path, len: usize) -> Vec<bool> {
        use std::os::fd::AsRawFd;
        let file = File::open(path).unwrap();
        let page = 4096;
        let pages = len.div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: a read-only shared mapping of `len` bytes of an open file,
        // only passed to mincore (never read) and unmapped before return;
        // `vec` has one byte per page, as mincore writes.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED);
            assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
            libc::munmap(addr, len);
        }
        vec.into_iter().map(|b| b & 1 == 1).collect()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn written_out_steps_leave_the_cache_and_the_newest_stay() {
        // In the build's directory: on disk (a tmpfs cannot drop pages).
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::tempdir_in(&base).unwrap();
        let (plain, behind) = (dir.path().join("plain.log"), dir.path().join("behind.log"));
        let step = 256 << 10;
        let block = vec![b'x'; 64 << 10];
        let mut p = append(&plain);
        let mut w = Behind::new(append(&behind), step);
        for _ in 0..16 {
            p.write_all(&block).unwrap();
            w.write_all(&block).unwrap();
        }
        let len = 16 * block.len();
        let cached = |f: &std::path::Path, range: std::ops::Range<usize>| {
            resident(f, len)[range.start / 4096..range.end / 4096]
                .iter()
                .filter(|&&r| r)
                .count()
        };
        let step = step as usize;
        // Four steps written, so four sheds: all but the last step are
        // dropped, and that one (being written out) is cached. A plain file
        // keeps them all.
        assert_eq!(w.dropped as usize, 3 * step);
        assert_eq!(cached(&plain, 0..len), len / 4096, "the control");
        assert_eq!(cached(&behind, 0..3 * step), 0);
        assert_eq!(cached(&behind, 3 * step..len), step / 4096);
    }
}
