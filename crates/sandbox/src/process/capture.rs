//! Bounded capture of one output stream: head and tail kept, the middle counted.

use std::collections::VecDeque;

use super::Captured;

/// The first `head_cap` bytes and the last `tail_cap` bytes of a stream, and its length.
/// While the stream is no longer than `head_cap + tail_cap`, head + tail is the whole stream.
#[derive(Debug)]
pub(super) struct HeadTail {
    head_cap: usize,
    tail_cap: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl HeadTail {
    pub(super) fn new(bytes: usize) -> Self {
        let head_cap = bytes / 2;
        HeadTail {
            head_cap,
            tail_cap: bytes - head_cap,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    pub(super) fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.head.len() < self.head_cap {
            let n = (self.head_cap - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        if bytes.len() >= self.tail_cap {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_cap..]);
        } else {
            let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_cap);
            self.tail.drain(..overflow);
            self.tail.extend(bytes);
        }
    }

    fn omitted(&self) -> u64 {
        self.total - (self.head.len() + self.tail.len()) as u64
    }

    fn tail_vec(&self) -> Vec<u8> {
        self.tail.iter().copied().collect()
    }
}

/// The two views of one stream: what the model sees and what is kept.
#[derive(Debug)]
pub(super) struct Capture {
    shown: HeadTail,
    kept: HeadTail,
}

impl Capture {
    pub(super) fn new(shown_bytes: usize, keep_bytes: usize) -> Self {
        Capture {
            shown: HeadTail::new(shown_bytes),
            kept: HeadTail::new(keep_bytes),
        }
    }

    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.shown.push(bytes);
        self.kept.push(bytes);
    }

    pub(super) fn finish(self) -> Captured {
        let mut whole = self.kept.head.clone();
        whole.extend(self.kept.tail_vec());
        Captured {
            shown: shown(&self.shown),
            total_bytes: self.kept.total,
            whole_truncated: self.kept.omitted() > 0,
            whole,
        }
    }
}

fn shown(view: &HeadTail) -> String {
    let tail = view.tail_vec();
    if view.omitted() == 0 {
        let mut all = view.head.clone();
        all.extend(tail);
        return String::from_utf8_lossy(&all).into_owned();
    }
    let head = trim_partial_end(&view.head);
    let tail_cut = partial_start(&tail);
    let omitted = view.omitted() + (view.head.len() - head.len() + tail_cut) as u64;
    format!(
        "{}\n[… {omitted} bytes omitted …]\n{}",
        String::from_utf8_lossy(head),
        String::from_utf8_lossy(&tail[tail_cut..])
    )
}

/// `bytes` without a UTF-8 sequence cut short at its end.
fn trim_partial_end(bytes: &[u8]) -> &[u8] {
    for back in 1..=bytes.len().min(4) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte: look further back for the lead
        }
        let width = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if width > back {
            &bytes[..bytes.len() - back]
        } else {
            bytes
        };
    }
    bytes
}

/// How many continuation bytes (at most 3) open `bytes`: the rest of a sequence cut short.
fn partial_start(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take(3)
        .take_while(|b| **b & 0xC0 == 0x80)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_stream_is_whole_and_shown_entirely() {
        let mut c = Capture::new(20, 20);
        c.push(b"hello ");
        c.push(b"world");
        let got = c.finish();
        assert_eq!(got.shown, "hello world");
        assert_eq!(got.whole, b"hello world");
        assert_eq!(got.total_bytes, 11);
        assert!(!got.whole_truncated);
    }

    #[test]
    fn long_stream_keeps_head_and_tail_with_a_marker() {
        let mut c = Capture::new(6, 8);
        for chunk in [&b"abcdefgh"[..], b"ijklmnop", b"qrstuvwxyz"] {
            c.push(chunk);
        }
        let got = c.finish();
        assert_eq!(got.total_bytes, 26);
        assert_eq!(got.whole, b"abcdwxyz");
        assert!(got.whole_truncated);
        assert_eq!(got.shown, "abc\n[… 20 bytes omitted …]\nxyz");
    }

    #[test]
    fn cuts_fall_on_utf8_boundaries() {
        let mut c = Capture::new(6, 100);
        c.push("ééééééééé".as_bytes()); // 18 bytes; head 3 = é + half, tail 3 = half + é
        let got = c.finish();
        assert_eq!(got.shown, "é\n[… 14 bytes omitted …]\né");
    }
}
