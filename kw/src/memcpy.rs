//! `memcpy` and `memmove` for the static musl build on x86-64.
//!
//! musl's x86-64 `memcpy` aligns the destination a byte at a time, then copies with
//! `rep movsq`, which is slow to start: measured on the benchmark machine (issue #14), 32–39 ns
//! for 16 to 100 bytes where glibc's takes 1.7–2.5 ns, and 156 ns for 4 KiB against 29. Every
//! copy in the binary goes through it (records into batches, values into the output, buffers
//! that grow). The static `kw` links these two instead: a linker takes a symbol from `libc.a`
//! only when no object given before it defines the symbol. `memmove` is here too because musl's
//! `memmove` jumps into its `memcpy` object, which would then be linked as well and clash.
//!
//! The copies: up to 128 bytes as 16-byte (or smaller) loads from both ends of the range, all
//! loads before any store, so that overlapping ranges copy correctly either way; longer ones
//! with `rep movsb`, which CPUs with ERMS (Intel since 2012; FSRM, fast for short copies too,
//! since 2019) run as their fastest copy. No loops in Rust: the compiler could turn a copying
//! loop into a call to `memcpy`, this one.
//!
//! The functions are compiled and tested on every x86-64 target; they are exported under the
//! C names only for musl.

// The one module of `kw` with unsafe code: a C-ABI replacement for two libc functions can only
// be written with raw pointers and `asm!`.
#![allow(unsafe_code)]

use core::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_storeu_si128};
use core::ptr::{read_unaligned, write_unaligned};

#[cfg(target_env = "musl")]
#[no_mangle]
unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    copy(dst, src, n);
    dst
}

#[cfg(target_env = "musl")]
#[no_mangle]
unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    copy_overlapping(dst, src, n);
    dst
}

/// Copies `n` bytes from `src` to `dst`, which do not overlap.
///
/// # Safety
/// As `memcpy`: `src` readable and `dst` writable for `n` bytes, the ranges apart.
#[inline(always)]
pub unsafe fn copy(dst: *mut u8, src: *const u8, n: usize) {
    if n <= 128 {
        copy_short(dst, src, n);
    } else {
        rep_movsb_forward(dst, src, n);
    }
}

/// Copies `n` bytes from `src` to `dst`, which may overlap.
///
/// # Safety
/// As `memmove`: `src` readable and `dst` writable for `n` bytes.
#[inline(always)]
pub unsafe fn copy_overlapping(dst: *mut u8, src: *const u8, n: usize) {
    if n <= 128 {
        copy_short(dst, src, n);
    } else if (dst as usize).wrapping_sub(src as usize) >= n {
        // `dst` before `src`, or past its end: front to back never reads a byte already written.
        rep_movsb_forward(dst, src, n);
    } else {
        rep_movsb_backward(dst, src, n);
    }
}

/// Up to 128 bytes: every load before any store (so overlap is harmless), the two halves of
/// the range covered from its start and from its end (the pieces overlap when `n` is not a
/// power of two).
#[inline(always)]
unsafe fn copy_short(dst: *mut u8, src: *const u8, n: usize) {
    let load = |at: usize| _mm_loadu_si128(src.add(at).cast::<__m128i>());
    let store = |at: usize, v: __m128i| _mm_storeu_si128(dst.add(at).cast::<__m128i>(), v);
    match n {
        0 => {}
        1 => *dst = *src,
        2..=3 => {
            let (a, b) = (read_unaligned(src.cast::<u16>()), read_unaligned(src.add(n - 2).cast::<u16>()));
            write_unaligned(dst.cast::<u16>(), a);
            write_unaligned(dst.add(n - 2).cast::<u16>(), b);
        }
        4..=7 => {
            let (a, b) = (read_unaligned(src.cast::<u32>()), read_unaligned(src.add(n - 4).cast::<u32>()));
            write_unaligned(dst.cast::<u32>(), a);
            write_unaligned(dst.add(n - 4).cast::<u32>(), b);
        }
        8..=16 => {
            let (a, b) = (read_unaligned(src.cast::<u64>()), read_unaligned(src.add(n - 8).cast::<u64>()));
            write_unaligned(dst.cast::<u64>(), a);
            write_unaligned(dst.add(n - 8).cast::<u64>(), b);
        }
        17..=32 => {
            let (a, b) = (load(0), load(n - 16));
            store(0, a);
            store(n - 16, b);
        }
        33..=64 => {
            let (a, b, c, d) = (load(0), load(16), load(n - 32), load(n - 16));
            store(0, a);
            store(16, b);
            store(n - 32, c);
            store(n - 16, d);
        }
        _ => {
            let (a, b, c, d) = (load(0), load(16), load(32), load(48));
            let (e, f, g, h) = (load(n - 64), load(n - 48), load(n - 32), load(n - 16));
            store(0, a);
            store(16, b);
            store(32, c);
            store(48, d);
            store(n - 64, e);
            store(n - 48, f);
            store(n - 32, g);
            store(n - 16, h);
        }
    }
}

#[inline(always)]
unsafe fn rep_movsb_forward(dst: *mut u8, src: *const u8, n: usize) {
    core::arch::asm!(
        "rep movsb",
        inout("rcx") n => _,
        inout("rdi") dst => _,
        inout("rsi") src => _,
        options(nostack, preserves_flags)
    );
}

/// Back to front, from the last byte: the direction flag set for the copy and cleared after it
/// (the ABI requires it clear).
#[inline(always)]
unsafe fn rep_movsb_backward(dst: *mut u8, src: *const u8, n: usize) {
    core::arch::asm!(
        "std",
        "rep movsb",
        "cld",
        inout("rcx") n => _,
        inout("rdi") dst.add(n - 1) => _,
        inout("rsi") src.add(n - 1) => _,
        options(nostack)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer of distinct bytes (a pattern that does not repeat within 251 bytes).
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn copies_every_length_at_every_alignment() {
        let src = pattern(1200);
        for n in (0..=300).chain([511, 512, 513, 1000, 1024]) {
            for (from, to) in [(0, 0), (1, 0), (0, 3), (7, 9), (15, 1), (13, 16)] {
                let mut dst = vec![0xEEu8; n + 40];
                // SAFETY: `src` has `from + n` bytes, `dst` has `to + n`; distinct buffers.
                unsafe { copy(dst.as_mut_ptr().add(to), src.as_ptr().add(from), n) };
                assert_eq!(&dst[to..to + n], &src[from..from + n], "n {n}, from {from}, to {to}");
                assert!(dst[..to].iter().chain(&dst[to + n..]).all(|&b| b == 0xEE), "wrote outside: n {n}");
            }
        }
    }

    #[test]
    fn overlapping_copies_move_the_bytes_in_either_direction() {
        for n in (0..=300).chain([511, 512, 513, 1000, 1024]) {
            for shift in [1usize, 2, 7, 8, 15, 16, 17, 64, 129, 300] {
                let original = pattern(n + shift + 8);
                // `dst` after `src`: copied back to front.
                let mut buf = original.clone();
                let mut expected = original.clone();
                expected.copy_within(0..n, shift);
                let p = buf.as_mut_ptr();
                // SAFETY: both ranges lie within `buf` (`shift + n` bytes).
                unsafe { copy_overlapping(p.add(shift), p, n) };
                assert_eq!(buf, expected, "dst after src: n {n}, shift {shift}");
                // `dst` before `src`: front to back.
                let mut buf = original.clone();
                let mut expected = original;
                expected.copy_within(shift..shift + n, 0);
                let p = buf.as_mut_ptr();
                // SAFETY: as above.
                unsafe { copy_overlapping(p, p.add(shift), n) };
                assert_eq!(buf, expected, "dst before src: n {n}, shift {shift}");
            }
        }
    }
}
