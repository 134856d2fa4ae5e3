//! The four Kafka codecs, with decompression bounded so that a small batch
//! from the network cannot make us allocate without limit.

use std::io::{Read, Write};

use crate::batch::Codec;

/// Largest decompressed records section we accept. Real producers build
/// batches of at most a few MiB; filler batches stay well below this (see
/// `filler::MAX_FILLER_UNCOMPRESSED`).
pub const MAX_DECOMPRESSED_BYTES: usize = 128 << 20;

/// The 8-byte magic of snappy-java's framing (SnappyOutputStream); it is
/// followed by two big-endian i32s (version, minimum compatible version).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;
/// snappy-java's default block size, which Kafka's Java producer uses.
const XERIAL_BLOCK: usize = 32 * 1024;

#[derive(Debug)]
pub(crate) enum DecompressError {
    TooLarge,
    Invalid(String),
}

pub(crate) fn default_level(codec: Codec) -> i32 {
    match codec {
        // Kafka's defaults (KIP-390): gzip 6 (java.util.zip default), zstd 3.
        Codec::Gzip => 6,
        Codec::Zstd => 3,
        // lz4 fast mode, as librdkafka writes it: re-encoding is on the
        // fetcher's hot path and lz4 is chosen for speed.
        Codec::Lz4 => 0,
        Codec::None | Codec::Snappy => 0,
    }
}

pub(crate) fn compress(codec: Codec, data: &[u8], level: i32) -> Result<Vec<u8>, String> {
    match codec {
        Codec::None => Ok(data.to_vec()),
        Codec::Gzip => {
            let level = flate2::Compression::new(level.clamp(0, 9) as u32);
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), level);
            enc.write_all(data).map_err(|e| e.to_string())?;
            enc.finish().map_err(|e| e.to_string())
        }
        Codec::Snappy => snappy_xerial(data),
        Codec::Lz4 => {
            let mut enc = lz4::EncoderBuilder::new()
                .level(level.max(0) as u32)
                // Kafka's KafkaLZ4BlockOutputStream: 64 KiB independent blocks.
                .block_size(lz4::BlockSize::Max64KB)
                .block_mode(lz4::BlockMode::Independent)
                .build(Vec::new())
                .map_err(|e| e.to_string())?;
            enc.write_all(data).map_err(|e| e.to_string())?;
            let (out, res) = enc.finish();
            res.map_err(|e| e.to_string())?;
            Ok(out)
        }
        Codec::Zstd => zstd::bulk::compress(data, level).map_err(|e| e.to_string()),
    }
}

fn snappy_xerial(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(XERIAL_HEADER_LEN + data.len() / 2);
    out.extend_from_slice(XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    let mut enc = snap::raw::Encoder::new();
    let mut block = Vec::new();
    for chunk in data.chunks(XERIAL_BLOCK) {
        block.resize(snap::raw::max_compress_len(chunk.len()), 0);
        let n = enc.compress(chunk, &mut block).map_err(|e| e.to_string())?;
        let n32 = u32::try_from(n).map_err(|e| e.to_string())?;
        out.extend_from_slice(&n32.to_be_bytes());
        out.extend_from_slice(block.get(..n).unwrap_or_default());
    }
    Ok(out)
}

/// Decompresses `data`, failing once the output would exceed `limit` bytes.
pub(crate) fn decompress(
    codec: Codec,
    data: &[u8],
    limit: usize,
) -> Result<Vec<u8>, DecompressError> {
    match codec {
        Codec::None => {
            if data.len() > limit {
                return Err(DecompressError::TooLarge);
            }
            Ok(data.to_vec())
        }
        Codec::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(data), limit),
        Codec::Snappy => snappy_decompress(data, limit),
        Codec::Lz4 => {
            let dec =
                lz4::Decoder::new(data).map_err(|e| DecompressError::Invalid(e.to_string()))?;
            read_bounded(dec, limit)
        }
        Codec::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|e| DecompressError::Invalid(e.to_string()))?;
            read_bounded(dec, limit)
        }
    }
}

fn read_bounded<R: Read>(reader: R, limit: usize) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| DecompressError::Invalid(e.to_string()))?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge);
    }
    Ok(out)
}

/// Java producers (snappy-java) write xerial-framed blocks, librdkafka writes
/// one raw snappy block; both are valid in a Kafka log, so accept both, as
/// snappy-java's SnappyInputStream does.
fn snappy_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    if data.len() >= XERIAL_HEADER_LEN && data.starts_with(XERIAL_MAGIC) {
        let mut out = Vec::new();
        let mut rest = data.get(XERIAL_HEADER_LEN..).unwrap_or_default();
        while !rest.is_empty() {
            let (len_bytes, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| DecompressError::Invalid("truncated xerial block length".into()))?;
            let len = u32::from_be_bytes(*len_bytes) as usize;
            let block = tail
                .get(..len)
                .ok_or_else(|| DecompressError::Invalid("truncated xerial block".into()))?;
            rest = tail.get(len..).unwrap_or_default();
            snappy_raw_into(block, &mut out, limit)?;
        }
        Ok(out)
    } else {
        let mut out = Vec::new();
        snappy_raw_into(data, &mut out, limit)?;
        Ok(out)
    }
}

fn snappy_raw_into(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), DecompressError> {
    let n =
        snap::raw::decompress_len(block).map_err(|e| DecompressError::Invalid(e.to_string()))?;
    // The length is a claim from the input: check it before allocating.
    let start = out.len();
    if n > limit.saturating_sub(start) {
        return Err(DecompressError::TooLarge);
    }
    out.resize(start + n, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, out.get_mut(start..).unwrap_or_default())
        .map_err(|e| DecompressError::Invalid(e.to_string()))?;
    out.truncate(start + written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips() {
        let data = sample();
        for codec in Codec::ALL {
            let c = compress(codec, &data, default_level(codec)).unwrap();
            let d = decompress(codec, &c, MAX_DECOMPRESSED_BYTES).unwrap();
            assert_eq!(d, data, "{codec}");
        }
    }

    #[test]
    fn snappy_accepts_raw_and_xerial_framing() {
        let data = sample();
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert!(!raw.starts_with(XERIAL_MAGIC));
        assert_eq!(snappy_decompress(&raw, usize::MAX).unwrap(), data);
        let framed = snappy_xerial(&data).unwrap();
        assert!(framed.starts_with(XERIAL_MAGIC));
        // More than one xerial block, as Java writes for > 32 KiB.
        assert!(data.len() > 2 * XERIAL_BLOCK);
        assert_eq!(snappy_decompress(&framed, usize::MAX).unwrap(), data);
    }

    #[test]
    fn decompression_is_bounded() {
        let data = vec![0u8; 1 << 20];
        for codec in Codec::ALL {
            let c = compress(codec, &data, default_level(codec)).unwrap();
            let err = decompress(codec, &c, 1000).unwrap_err();
            assert!(matches!(err, DecompressError::TooLarge), "{codec}: {err:?}");
        }
    }

    #[test]
    fn garbage_is_an_error_for_every_codec() {
        let garbage = b"this is not compressed data at all, really not".to_vec();
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            assert!(decompress(codec, &garbage, 1 << 20).is_err(), "{codec}");
        }
    }
}
