//! The Teams app package template in `teams-app/`: the manifest is JSON with the fields Teams
//! requires for a personal, notification-only bot, its icons are real PNGs of the sizes Teams
//! asks for, its localization file matches, and every placeholder is explained in the README.

use serde_json::Value;
use std::path::{Path, PathBuf};

fn app_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("teams-app")
}

fn read_json(name: &str) -> Value {
    let path = app_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

fn manifest() -> Value {
    read_json("manifest.json")
}

/// `{{NAME}}` placeholders in a text.
fn placeholders(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(format!("{{{{{}}}}}", &after[..end]));
        rest = &after[end + 2..];
    }
    out.sort();
    out.dedup();
    out
}

/// A GUID, or a `{{NAME}}` placeholder to be replaced by one.
fn is_guid_or_placeholder(value: &str) -> bool {
    uuid::Uuid::parse_str(value).is_ok()
        || (value.starts_with("{{")
            && value.ends_with("}}")
            && value[2..value.len() - 2]
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_'))
}

fn text_within(v: &Value, what: &str, max: usize) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} must be a string"));
    assert!(
        !s.trim().is_empty() && s.chars().count() <= max,
        "{what} must be 1 to {max} characters, is {}",
        s.chars().count()
    );
}

/// CRC-32 (IEEE), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
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

/// What the IHDR chunk says: width, height, bit depth, colour type.
#[derive(Debug, PartialEq)]
struct Header {
    width: u32,
    height: u32,
    bit_depth: u8,
    color_type: u8,
}

/// Reads a PNG's header after checking the signature, that IHDR comes first, that every
/// chunk's CRC is right, that there is image data and that the file ends with IEND.
fn png_header(name: &str) -> Header {
    let path = app_dir().join(name);
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{name}: not a PNG signature"
    );
    let mut at = 8;
    let mut kinds = Vec::new();
    let mut header = None;
    while at + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let end = at + 8 + len;
        assert!(end + 4 <= bytes.len(), "{name}: chunk runs past the end");
        let kind = String::from_utf8_lossy(&bytes[at + 4..at + 8]).to_string();
        let stored = u32::from_be_bytes(bytes[end..end + 4].try_into().unwrap());
        assert_eq!(
            crc32(&bytes[at + 4..end]),
            stored,
            "{name}: bad CRC in {kind}"
        );
        if kind == "IHDR" {
            let d = &bytes[at + 8..end];
            header = Some(Header {
                width: u32::from_be_bytes(d[0..4].try_into().unwrap()),
                height: u32::from_be_bytes(d[4..8].try_into().unwrap()),
                bit_depth: d[8],
                color_type: d[9],
            });
        }
        kinds.push(kind);
        at = end + 4;
    }
    assert_eq!(at, bytes.len(), "{name}: trailing bytes after the chunks");
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("IHDR"),
        "{name}: IHDR must come first"
    );
    assert!(kinds.iter().any(|k| k == "IDAT"), "{name}: no image data");
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("IEND"),
        "{name}: must end with IEND"
    );
    header.expect("IHDR")
}

#[test]
fn the_manifest_template_is_json_with_the_fields_teams_requires() {
    let m = manifest();
    let version = m["manifestVersion"]
        .as_str()
        .expect("manifestVersion is a string");
    assert!(
        m["$schema"]
            .as_str()
            .is_some_and(|s| s.ends_with(&format!("/v{version}/MicrosoftTeams.schema.json"))),
        "$schema must be the schema of manifestVersion {version}: {}",
        m["$schema"]
    );
    let app_version = m["version"].as_str().expect("version is a string");
    assert!(
        app_version.split('.').count() == 3
            && app_version.split('.').all(|p| p.parse::<u32>().is_ok()),
        "version must be MAJOR.MINOR.PATCH: {app_version}"
    );
    assert!(
        is_guid_or_placeholder(m["id"].as_str().expect("id is a string")),
        "id must be a GUID or a placeholder: {}",
        m["id"]
    );
    for field in ["name", "websiteUrl", "privacyUrl", "termsOfUseUrl"] {
        assert!(
            m["developer"][field].is_string(),
            "developer.{field} is required"
        );
    }
    text_within(&m["name"]["short"], "name.short", 30);
    text_within(&m["name"]["full"], "name.full", 100);
    text_within(&m["description"]["short"], "description.short", 80);
    text_within(&m["description"]["full"], "description.full", 4000);
    let accent = m["accentColor"].as_str().expect("accentColor is a string");
    assert!(
        accent.len() == 7
            && accent.starts_with('#')
            && accent[1..].chars().all(|c| c.is_ascii_hexdigit()),
        "accentColor must be #RRGGBB: {accent}"
    );
    assert_eq!(
        m["validDomains"],
        serde_json::json!([]),
        "a bot-only app needs no domains"
    );
}

#[test]
fn the_bot_is_personal_notification_only_and_named_by_the_managed_identity_placeholder() {
    let m = manifest();
    let bots = m["bots"].as_array().expect("bots is an array");
    assert_eq!(bots.len(), 1, "one bot");
    let bot = &bots[0];
    assert_eq!(
        bot["botId"], "{{BOT_APP_ID}}",
        "botId is the managed identity's client id, filled in at packaging"
    );
    assert_eq!(bot["scopes"], serde_json::json!(["personal"]));
    assert_eq!(bot["isNotificationOnly"], true, "users cannot message it");
    assert_eq!(bot["supportsFiles"], false);
    for absent in ["staticTabs", "configurableTabs", "composeExtensions"] {
        assert!(m.get(absent).is_none(), "{absent}: the app is a bot only");
    }
}

#[test]
fn the_icons_are_pngs_of_the_sizes_teams_requires() {
    let m = manifest();
    let color = m["icons"]["color"].as_str().expect("icons.color");
    let outline = m["icons"]["outline"].as_str().expect("icons.outline");
    let c = png_header(color);
    assert_eq!((c.width, c.height), (192, 192), "{color}: {c:?}");
    let o = png_header(outline);
    assert_eq!((o.width, o.height), (32, 32), "{outline}: {o:?}");
    // The outline icon is white on a transparent background: it needs an alpha channel.
    assert!(
        o.bit_depth == 8 && matches!(o.color_type, 4 | 6),
        "{outline}: expected 8-bit grey+alpha or RGBA, got {o:?}"
    );
}

#[test]
fn the_french_localization_file_exists_and_translates_the_names_and_descriptions() {
    let m = manifest();
    let info = &m["localizationInfo"];
    assert_eq!(
        info["defaultLanguageTag"], "en-us",
        "the manifest's own strings are English"
    );
    let languages = info["additionalLanguages"]
        .as_array()
        .expect("additionalLanguages");
    let fr = languages
        .iter()
        .find(|l| l["languageTag"] == "fr-fr")
        .expect("a fr-fr translation");
    let file = fr["file"].as_str().expect("file");
    let l = read_json(file);
    let version = m["manifestVersion"].as_str().unwrap();
    assert!(
        l["$schema"].as_str().is_some_and(|s| s.ends_with(&format!(
            "/v{version}/MicrosoftTeams.Localization.schema.json"
        ))),
        "{file}: $schema {}",
        l["$schema"]
    );
    text_within(&l["name.short"], "name.short (fr)", 30);
    text_within(&l["name.full"], "name.full (fr)", 100);
    text_within(&l["description.short"], "description.short (fr)", 80);
    text_within(&l["description.full"], "description.full (fr)", 4000);
}

#[test]
fn every_placeholder_in_the_manifest_is_explained_in_the_readme() {
    let manifest_text = std::fs::read_to_string(app_dir().join("manifest.json")).unwrap();
    let readme = std::fs::read_to_string(app_dir().join("README.md")).expect("teams-app/README.md");
    let found = placeholders(&manifest_text);
    assert!(
        found.contains(&"{{BOT_APP_ID}}".to_string()),
        "placeholders: {found:?}"
    );
    let missing: Vec<&String> = found.iter().filter(|p| !readme.contains(*p)).collect();
    assert!(
        missing.is_empty(),
        "placeholders not explained in teams-app/README.md: {missing:?}"
    );
    // The README's zip list names every file the manifest refers to.
    let m = manifest();
    for file in [
        m["icons"]["color"].as_str().unwrap(),
        m["icons"]["outline"].as_str().unwrap(),
        m["localizationInfo"]["additionalLanguages"][0]["file"]
            .as_str()
            .unwrap(),
    ] {
        assert!(
            readme.contains(file),
            "teams-app/README.md never mentions {file}"
        );
    }
}
