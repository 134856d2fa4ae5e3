//! Updating a batch's CRC-32C after a header edit without reading the
//! records again.
//!
//! A CRC is linear over GF(2): for two messages of the same length that
//! differ only in their first bytes, `crc(A') ^ crc(A)` equals the CRC of
//! the difference of those first bytes shifted past the unchanged rest,
//! that is multiplied by `x^(8 * rest)` modulo the polynomial. The shift is
//! a few dozen carry-less multiplications of 32-bit words, however long
//! the rest is, where a CRC pass over a 64 KiB batch reads 64 KiB. (The
//! `crc32c` crate's `crc32c_combine` does the same shift with 32x32 bit
//! matrices, about ten times slower than one pass over such a batch.)

/// CRC-32C (Castagnoli) polynomial, bit-reflected as the CRC is computed.
const POLY: u32 = 0x82F6_3B78;

/// `a * b mod POLY` for reflected polynomials (bit 31 is x^0).
const fn mul_mod(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0u32;
    loop {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                return p;
            }
        }
        m >>= 1;
        if m == 0 {
            return p;
        }
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
}

/// `X2N[k] = x^(2^k) mod POLY`.
const X2N: [u32; 32] = {
    let mut t = [0u32; 32];
    let mut p = 1u32 << 30; // x^1
    let mut k = 0;
    while k < 32 {
        t[k] = p;
        p = mul_mod(p, p);
        k += 1;
    }
    t
};

/// `x^(8 * bytes) mod POLY`: the factor that moves a CRC past `bytes` zeros.
fn shift_factor(bytes: u64) -> u32 {
    let mut p = 1u32 << 31; // x^0
    let mut n = bytes;
    let mut k = 3; // 8 = 2^3 bits per byte
    while n != 0 {
        if n & 1 != 0 {
            p = mul_mod(X2N[k & 31], p);
        }
        n >>= 1;
        k += 1;
    }
    p
}

/// The CRC-32C of `new_head ++ rest`, given `crc = crc32c(old_head ++ rest)`
/// and `rest_len`; `old_head` and `new_head` have the same length.
pub(crate) fn replace_head(crc: u32, old_head: &[u8], new_head: &[u8], rest_len: usize) -> u32 {
    debug_assert_eq!(old_head.len(), new_head.len());
    let delta = crc32c::crc32c(old_head) ^ crc32c::crc32c(new_head);
    if delta == 0 {
        return crc;
    }
    crc ^ mul_mod(shift_factor(rest_len as u64), delta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shifting_equals_appending_zeros() {
        for len in [0usize, 1, 7, 8, 61, 4096, 65_536, 1_000_003] {
            let head = b"cutover header bytes";
            let mut whole = head.to_vec();
            whole.resize(head.len() + len, 0);
            // crc(head ++ zeros) = crc(head) * x^(8 len) ^ crc(zeros)
            let expect = crc32c::crc32c(&whole);
            let zeros = crc32c::crc32c(&whole[head.len()..]);
            let got = mul_mod(shift_factor(len as u64), crc32c::crc32c(head)) ^ zeros;
            assert_eq!(got, expect, "len {len}");
        }
    }

    proptest! {
        #[test]
        fn replacing_the_head_equals_a_full_pass(
            old in proptest::collection::vec(any::<u8>(), 0..64),
            flips in proptest::collection::vec(any::<u8>(), 0..64),
            rest in proptest::collection::vec(any::<u8>(), 0..5000),
        ) {
            let new: Vec<u8> = old.iter().zip(flips.iter().chain(std::iter::repeat(&0))).map(|(a, b)| a ^ b).collect();
            let before = crc32c::crc32c_append(crc32c::crc32c(&old), &rest);
            let after = crc32c::crc32c_append(crc32c::crc32c(&new), &rest);
            prop_assert_eq!(replace_head(before, &old, &new, rest.len()), after);
        }
    }
}
