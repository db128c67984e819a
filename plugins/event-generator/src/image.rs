//! Real, small PNG images for the titles' thumbnails and banners.
//!
//! Each image is an 8-bit RGB gradient between two colours with diagonal stripes, all drawn
//! from a hash of the run's seed, the title and the role, so the same seed gives the same
//! bytes. The encoder writes the PNG chunks itself and lets `miniz_oxide` do the zlib
//! compression.

use sha2::{Digest, Sha256};

use crate::rng::splitmix64;

/// Thumbnail size in pixels (16:9).
pub const THUMBNAIL: (u32, u32) = (48, 27);
/// Banner size in pixels (3:1).
pub const BANNER: (u32, u32) = (96, 32);

/// The PNG file signature.
pub const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1A, b'\n'];

/// An encoded image and the hex SHA-256 of its bytes.
#[derive(Debug, Clone)]
pub struct Png {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The PNG file.
    pub bytes: Vec<u8>,
    /// Lower-case hex SHA-256 of `bytes`.
    pub sha256: String,
}

/// The picture for one asset: `key` (e.g. a hash of seed, title and role) picks the colours
/// and the stripes' period.
pub fn render(key: u64, width: u32, height: u32) -> Png {
    let mut h = key;
    let from = rgb(splitmix64(&mut h));
    let to = rgb(splitmix64(&mut h));
    let period = 6 + (splitmix64(&mut h) % 10) as u32;
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let t = x * 255 / (width - 1).max(1);
            let stripe = (x + y) % period < period / 3;
            for c in 0..3 {
                let v = (u32::from(from[c]) * (255 - t) + u32::from(to[c]) * t) / 255;
                let v = if stripe { v * 3 / 4 } else { v };
                pixels.push(v as u8);
            }
        }
    }
    let bytes = encode_rgb(width, height, &pixels);
    let sha256 = hex(&Sha256::digest(&bytes));
    Png {
        width,
        height,
        bytes,
        sha256,
    }
}

/// Three colour channels from a random word, kept away from black.
fn rgb(word: u64) -> [u8; 3] {
    let b = word.to_le_bytes();
    [b[0] | 0x30, b[1] | 0x30, b[2] | 0x30]
}

/// A PNG file of 8-bit RGB `pixels` (row-major, 3 bytes a pixel), filter type 0 on every row.
pub fn encode_rgb(width: u32, height: u32, pixels: &[u8]) -> Vec<u8> {
    let row = (width * 3) as usize;
    debug_assert_eq!(pixels.len(), row * height as usize);
    let mut raw = Vec::with_capacity((row + 1) * height as usize);
    for line in pixels.chunks(row) {
        raw.push(0); // filter: none
        raw.extend_from_slice(line);
    }
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);

    let mut out = PNG_SIGNATURE.to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &miniz_oxide::deflate::compress_to_vec_zlib(&raw, 9),
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Appends one chunk: length, type, data, CRC-32 of type and data.
fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(kind.iter().chain(data));
    out.extend_from_slice(&crc.to_be_bytes());
}

/// CRC-32 (ISO-HDLC, as PNG uses), bit by bit: the images are a few kilobytes.
pub fn crc32<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits a PNG into its chunks, checking each CRC; panics on a malformed file.
    pub(crate) fn chunks(png: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
        assert_eq!(&png[..8], &PNG_SIGNATURE, "PNG signature");
        let mut rest = &png[8..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let kind: [u8; 4] = rest[4..8].try_into().unwrap();
            let data = rest[8..8 + len].to_vec();
            let crc = u32::from_be_bytes(rest[8 + len..12 + len].try_into().unwrap());
            assert_eq!(crc, crc32(kind.iter().chain(&data)), "CRC of {kind:?}");
            out.push((kind, data));
            rest = &rest[12 + len..];
        }
        out
    }

    #[test]
    fn crc32_matches_the_check_value_and_png_iend() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        // Every PNG ends with the same IEND chunk, whose CRC is AE 42 60 82.
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    #[test]
    fn png_has_signature_ihdr_and_decodes_to_the_pixels() {
        for (w, h) in [THUMBNAIL, BANNER] {
            let png = render(0xDEAD_BEEF, w, h);
            let chunks = chunks(&png.bytes);
            let kinds: Vec<&[u8; 4]> = chunks.iter().map(|(k, _)| k).collect();
            assert_eq!(kinds, [b"IHDR", b"IDAT", b"IEND"]);
            let ihdr = &chunks[0].1;
            assert_eq!(u32::from_be_bytes(ihdr[0..4].try_into().unwrap()), w);
            assert_eq!(u32::from_be_bytes(ihdr[4..8].try_into().unwrap()), h);
            assert_eq!(&ihdr[8..], &[8, 2, 0, 0, 0]);
            let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&chunks[1].1).unwrap();
            assert_eq!(raw.len(), (w as usize * 3 + 1) * h as usize);
            assert!(raw.chunks(w as usize * 3 + 1).all(|row| row[0] == 0));
            assert_eq!(png.sha256, hex(&Sha256::digest(&png.bytes)));
            assert_eq!(png.sha256.len(), 64);
        }
    }

    #[test]
    fn sha256_hex_matches_the_standard_vector() {
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn different_keys_give_different_images() {
        let a = render(1, THUMBNAIL.0, THUMBNAIL.1);
        let b = render(2, THUMBNAIL.0, THUMBNAIL.1);
        assert_ne!(a.sha256, b.sha256);
        assert_eq!(a.bytes, render(1, THUMBNAIL.0, THUMBNAIL.1).bytes);
    }
}
