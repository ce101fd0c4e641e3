//! Checks a shop's source zip in S3 without downloading it: two or three ranged GETs read the
//! end-of-central-directory record and the central directory, which list every entry name.
//! See APPNOTE.TXT sections 4.3.12 to 4.3.16 for the record layouts.

use crate::cloud::{CloudError, ObjectStorage};

/// End of central directory record: fixed part, before the comment.
const EOCD_LEN: u64 = 22;
const EOCD_SIGNATURE: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_LEN: u64 = 20;
const ZIP64_LOCATOR_SIGNATURE: u32 = 0x0706_4b50;
const ZIP64_EOCD_LEN: u64 = 56;
const ZIP64_EOCD_SIGNATURE: u32 = 0x0606_4b50;
const CENTRAL_HEADER_LEN: usize = 46;
const CENTRAL_HEADER_SIGNATURE: u32 = 0x0201_4b50;
/// A zip comment is at most 65,535 bytes, so the EOCD sits in the last 64 KiB + 22 bytes.
const MAX_COMMENT_LEN: u64 = 0xFFFF;
/// We refuse to read a central directory larger than this; a storefront has no business with
/// hundreds of thousands of files, and the check must stay cheap.
pub const MAX_CENTRAL_DIRECTORY_LEN: u64 = 32 << 20;

/// The folder every shop zip must carry at its top level; CodeDeploy hooks run its scripts.
pub const SCRIPTS_DIR: &str = "scripts/";

/// What a checked source zip holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceSummary {
    pub size: u64,
    pub version_id: String,
    pub entries: usize,
}

/// Why a source zip is not usable.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source {location} does not exist")]
    Missing { location: String },
    #[error("source {location} is not a zip archive: {why}")]
    NotZip { location: String, why: String },
    #[error(
        "source {location} has a central directory of {len} bytes; the limit is {MAX_CENTRAL_DIRECTORY_LEN}"
    )]
    TooLarge { location: String, len: u64 },
    #[error("source {location} has no {SCRIPTS_DIR} folder at its top level")]
    NoScripts { location: String },
    #[error("read source {location}")]
    Cloud {
        location: String,
        #[source]
        source: CloudError,
    },
}

/// Where the central directory is, read from the end-of-central-directory records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Directory {
    offset: u64,
    len: u64,
    entries: u64,
}

/// Reads the zip's central directory through ranged GETs and checks that it has a top-level
/// `scripts/` folder. `version` pins the object version; `None` means the current one.
pub async fn check_source_zip(
    storage: &dyn ObjectStorage,
    bucket: &str,
    key: &str,
    version: Option<&str>,
) -> Result<SourceSummary, SourceError> {
    let location = match version {
        Some(v) => format!("s3://{bucket}/{key} (version {v})"),
        None => format!("s3://{bucket}/{key}"),
    };
    let cloud = |source: CloudError| {
        if source.is_not_found() {
            SourceError::Missing {
                location: location.clone(),
            }
        } else {
            SourceError::Cloud {
                location: location.clone(),
                source,
            }
        }
    };
    let not_zip = |why: &str| SourceError::NotZip {
        location: location.clone(),
        why: why.to_owned(),
    };

    let head = storage
        .head_object(bucket, key, version)
        .await
        .map_err(cloud)?;
    let version_id = head.version_id.clone();
    if head.size < EOCD_LEN {
        return Err(not_zip("too short"));
    }
    let tail_len = head
        .size
        .min(EOCD_LEN + MAX_COMMENT_LEN + ZIP64_LOCATOR_LEN);
    let tail_start = head.size - tail_len;
    let tail = storage
        .get_range(bucket, key, &version_id, tail_start, tail_len)
        .await
        .map_err(cloud)?;

    let directory = match find_directory(&tail).map_err(&not_zip)? {
        Located::Directory(directory) => directory,
        Located::Zip64At(offset) => {
            let record = storage
                .get_range(bucket, key, &version_id, offset, ZIP64_EOCD_LEN)
                .await
                .map_err(cloud)?;
            parse_zip64_eocd(&record).map_err(&not_zip)?
        }
    };
    if directory.len > MAX_CENTRAL_DIRECTORY_LEN {
        return Err(SourceError::TooLarge {
            location,
            len: directory.len,
        });
    }
    if directory.offset.saturating_add(directory.len) > head.size {
        return Err(not_zip("central directory lies past the end of the object"));
    }

    let bytes = if directory.offset >= tail_start {
        let from = usize::try_from(directory.offset - tail_start).map_err(|_| not_zip("offset"))?;
        let to = from + usize::try_from(directory.len).map_err(|_| not_zip("length"))?;
        tail.slice(from..to.min(tail.len()))
    } else {
        storage
            .get_range(bucket, key, &version_id, directory.offset, directory.len)
            .await
            .map_err(cloud)?
    };
    let names = entry_names(&bytes, directory.entries).map_err(&not_zip)?;
    if !names.iter().any(|name| is_top_level_scripts(name)) {
        return Err(SourceError::NoScripts { location });
    }
    Ok(SourceSummary {
        size: head.size,
        version_id,
        entries: names.len(),
    })
}

/// Whether an entry lives in the top-level `scripts/` folder (or is that folder). Archives made
/// on Windows sometimes use backslashes.
fn is_top_level_scripts(name: &str) -> bool {
    name.replace('\\', "/").starts_with(SCRIPTS_DIR)
}

enum Located {
    Directory(Directory),
    /// The classic record is saturated; the ZIP64 record is at this offset.
    Zip64At(u64),
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Finds the end-of-central-directory record in the tail of the object, scanning backwards
/// because the comment that may follow it has variable length.
fn find_directory(tail: &[u8]) -> Result<Located, &'static str> {
    let last_start = tail
        .len()
        .checked_sub(EOCD_LEN as usize)
        .ok_or("too short")?;
    let eocd = (0..=last_start)
        .rev()
        .find(|&at| {
            u32_at(tail, at) == Some(EOCD_SIGNATURE)
                && u16_at(tail, at + 20).map(usize::from)
                    == Some(tail.len() - at - EOCD_LEN as usize)
        })
        .ok_or("no end-of-central-directory record")?;

    let entries = u16_at(tail, eocd + 10).ok_or("truncated record")?;
    let len = u32_at(tail, eocd + 12).ok_or("truncated record")?;
    let offset = u32_at(tail, eocd + 16).ok_or("truncated record")?;
    if entries == 0xFFFF || len == 0xFFFF_FFFF || offset == 0xFFFF_FFFF {
        let locator = eocd
            .checked_sub(ZIP64_LOCATOR_LEN as usize)
            .filter(|&at| u32_at(tail, at) == Some(ZIP64_LOCATOR_SIGNATURE))
            .ok_or("zip64 locator missing")?;
        let zip64_offset = u64_at(tail, locator + 8).ok_or("truncated zip64 locator")?;
        return Ok(Located::Zip64At(zip64_offset));
    }
    Ok(Located::Directory(Directory {
        offset: u64::from(offset),
        len: u64::from(len),
        entries: u64::from(entries),
    }))
}

fn parse_zip64_eocd(record: &[u8]) -> Result<Directory, &'static str> {
    if u32_at(record, 0) != Some(ZIP64_EOCD_SIGNATURE) {
        return Err("bad zip64 end-of-central-directory record");
    }
    Ok(Directory {
        entries: u64_at(record, 32).ok_or("truncated zip64 record")?,
        len: u64_at(record, 40).ok_or("truncated zip64 record")?,
        offset: u64_at(record, 48).ok_or("truncated zip64 record")?,
    })
}

/// Lists entry names of a central directory.
fn entry_names(directory: &[u8], expected: u64) -> Result<Vec<String>, &'static str> {
    let mut names = Vec::new();
    let mut at = 0;
    while at < directory.len() {
        if u32_at(directory, at) != Some(CENTRAL_HEADER_SIGNATURE) {
            return Err("corrupt central directory");
        }
        let name_len = usize::from(u16_at(directory, at + 28).ok_or("truncated entry")?);
        let extra_len = usize::from(u16_at(directory, at + 30).ok_or("truncated entry")?);
        let comment_len = usize::from(u16_at(directory, at + 32).ok_or("truncated entry")?);
        let name_start = at + CENTRAL_HEADER_LEN;
        let name = directory
            .get(name_start..name_start + name_len)
            .ok_or("truncated entry name")?;
        names.push(String::from_utf8_lossy(name).into_owned());
        at = name_start + name_len + extra_len + comment_len;
    }
    if names.len() as u64 != expected {
        return Err("entry count does not match the central directory");
    }
    Ok(names)
}

/// Builds a stored (uncompressed) zip archive. The simulated AWS seeds sample shops with it and
/// tests use it to make source objects; the controller itself never writes zips.
pub fn build_stored_zip(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let size = data.len() as u32;
        let name_len = name.len() as u16;

        out.extend_from_slice(&0x0403_4b50_u32.to_le_bytes());
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        for value in [crc, size, size] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(&0_u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);

        central.extend_from_slice(&CENTRAL_HEADER_SIGNATURE.to_le_bytes());
        central.extend_from_slice(&[20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        for value in [crc, size, size] {
            central.extend_from_slice(&value.to_le_bytes());
        }
        central.extend_from_slice(&name_len.to_le_bytes());
        central.extend_from_slice(&[0; 8]);
        let mode: u32 = if name.ends_with('/') {
            0o040755 << 16
        } else {
            0o100755 << 16
        };
        central.extend_from_slice(&mode.to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let directory_offset = out.len() as u32;
    let count = files.len() as u16;
    out.extend_from_slice(&central);
    out.extend_from_slice(&EOCD_SIGNATURE.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&directory_offset.to_le_bytes());
    out.extend_from_slice(&0_u16.to_le_bytes());
    out
}

/// CRC-32 (IEEE), bitwise: only used to build small test and sample archives.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0_u32;
    for byte in data {
        crc ^= u32::from(*byte);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn reads_names_back_from_a_built_archive() {
        let zip = build_stored_zip(&[
            ("scripts/", b""),
            ("scripts/start.sh", b"echo hi"),
            ("a", b"x"),
        ]);
        let Ok(Located::Directory(directory)) = find_directory(&zip) else {
            panic!("no directory");
        };
        assert_eq!(directory.entries, 3);
        let start = directory.offset as usize;
        let names = entry_names(&zip[start..start + directory.len as usize], 3).expect("parses");
        assert_eq!(names, ["scripts/", "scripts/start.sh", "a"]);
    }

    #[test]
    fn finds_the_record_behind_a_comment() {
        let mut zip = build_stored_zip(&[("scripts/x", b"")]);
        let len = zip.len();
        zip[len - 2..].copy_from_slice(&5_u16.to_le_bytes());
        zip.extend_from_slice(b"hello");
        assert!(matches!(find_directory(&zip), Ok(Located::Directory(_))));
    }

    #[test]
    fn rejects_garbage() {
        assert!(find_directory(b"not a zip at all, just some text").is_err());
        assert!(entry_names(b"PK\x01\x02short", 1).is_err());
    }

    #[test]
    fn scripts_folder_must_be_top_level() {
        assert!(is_top_level_scripts("scripts/start.sh"));
        assert!(is_top_level_scripts("scripts\\start.sh"));
        assert!(!is_top_level_scripts("scripts"));
        assert!(!is_top_level_scripts("app/scripts/start.sh"));
        assert!(!is_top_level_scripts("scripts.txt"));
    }

    mod against_simulated_s3 {
        use super::super::*;
        use crate::sim::SimulatedAws;

        fn storage_with(data: Vec<u8>) -> (SimulatedAws, String) {
            let aws = SimulatedAws::new();
            let version = aws.put_object("src", "shop.example.com.zip", data);
            (aws, version)
        }

        #[tokio::test]
        async fn accepts_a_zip_with_scripts() {
            let zip = build_stored_zip(&[("index.js", b"//"), ("scripts/start.sh", b"#!/bin/sh")]);
            let (aws, version) = storage_with(zip);
            let summary = check_source_zip(&aws, "src", "shop.example.com.zip", Some(&version))
                .await
                .expect("valid source");
            assert_eq!(summary.entries, 2);
            assert_eq!(summary.version_id, version);
        }

        #[tokio::test]
        async fn reads_only_the_tail_of_a_large_archive() {
            let big = vec![7_u8; 3 << 20];
            let zip = build_stored_zip(&[("blob.bin", &big), ("scripts/start.sh", b"x")]);
            let (aws, _) = storage_with(zip);
            check_source_zip(&aws, "src", "shop.example.com.zip", None)
                .await
                .expect("valid");
            assert_eq!(
                aws.call_count("s3:GetObject"),
                1,
                "one ranged GET of the tail"
            );
        }

        #[tokio::test]
        async fn names_what_is_wrong() {
            let (aws, _) = storage_with(build_stored_zip(&[("app/scripts/x", b"")]));
            let error = check_source_zip(&aws, "src", "shop.example.com.zip", None).await;
            let message = error.expect_err("no scripts").to_string();
            assert_eq!(
                message,
                "source s3://src/shop.example.com.zip has no scripts/ folder at its top level"
            );

            let (aws, _) = storage_with(b"just text, long enough to look for a record".to_vec());
            let error = check_source_zip(&aws, "src", "shop.example.com.zip", None).await;
            assert!(matches!(error, Err(SourceError::NotZip { .. })));

            let error = check_source_zip(&aws, "src", "other.zip", None).await;
            assert!(matches!(error, Err(SourceError::Missing { .. })));
            let error = check_source_zip(&aws, "src", "shop.example.com.zip", Some("v9")).await;
            assert!(matches!(error, Err(SourceError::Missing { .. })));
        }
    }
}
