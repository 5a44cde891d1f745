//! The demo site's subresources: stylesheets, scripts, a web font and images, generated
//! byte for byte from their name, so every run serves the same bytes.
//!
//! Pure functions, no IO. Sizes follow what a small content site sends (tens of KB per
//! stylesheet and image, about 100 KB of script). What the files do must never change a
//! page's title or its links: the scripts only compute, the stylesheets only style. That
//! keeps pages comparable whatever a crawler blocks.

/// What kind of subresource a demo page pulls, named as in Chromium's resource types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AssetKind {
    /// A `<link rel=stylesheet>`.
    Stylesheet,
    /// A `<script src>`.
    Script,
    /// A web font loaded through `@font-face`.
    Font,
    /// An `<img>`.
    Image,
}

/// One subresource of a demo page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asset {
    /// The path on the demo site, starting with `/`.
    pub path: String,
    /// What it is.
    pub kind: AssetKind,
}

/// The shared stylesheets, each with its size in bytes. The first declares the font.
pub(super) const STYLESHEETS: [(&str, usize); 3] = [
    ("/static/css/base.css", 40 * 1024),
    ("/static/css/layout.css", 16 * 1024),
    ("/static/css/theme.css", 6 * 1024),
];
/// The shared scripts (loaded `defer`), each with its size in bytes.
pub(super) const SCRIPTS: [(&str, usize); 2] = [
    ("/static/js/vendor.js", 90 * 1024),
    ("/static/js/app.js", 30 * 1024),
];
/// The web font, requested once text styled with it is laid out.
pub(super) const FONT: (&str, usize) = ("/static/font/demo-sans.woff2", 28 * 1024);
/// The logo every page shows: width and height in pixels.
pub(super) const LOGO: (&str, u32, u32) = ("/static/img/logo.png", 120, 40);
/// Each page's own images: file name, width, height.
pub(super) const PAGE_IMAGES: [(&str, u32, u32); 2] =
    [("hero.png", 240, 135), ("thumb.png", 120, 90)];

/// The subresources page `n` pulls, in document order (the font last: it is found only
/// once a stylesheet is applied).
pub(super) fn page_assets(n: usize) -> Vec<Asset> {
    let mut assets: Vec<Asset> = STYLESHEETS
        .iter()
        .map(|(p, _)| Asset {
            path: (*p).to_string(),
            kind: AssetKind::Stylesheet,
        })
        .collect();
    assets.extend(SCRIPTS.iter().map(|(p, _)| Asset {
        path: (*p).to_string(),
        kind: AssetKind::Script,
    }));
    assets.push(Asset {
        path: LOGO.0.to_string(),
        kind: AssetKind::Image,
    });
    assets.extend(PAGE_IMAGES.iter().map(|(name, _, _)| Asset {
        path: format!("/img/{n}/{name}"),
        kind: AssetKind::Image,
    }));
    assets.push(Asset {
        path: FONT.0.to_string(),
        kind: AssetKind::Font,
    });
    assets
}

/// The `<head>` and `<body>` markup that pulls page `n`'s assets: `(head, body_top)`.
pub(super) fn page_markup(n: usize) -> (String, String) {
    let mut head = String::new();
    for (path, _) in STYLESHEETS {
        head.push_str(&format!("<link rel=stylesheet href=\"{path}\">"));
    }
    for (path, _) in SCRIPTS {
        head.push_str(&format!("<script defer src=\"{path}\"></script>"));
    }
    let mut body = format!(
        "<header><img src=\"{}\" alt=\"logo\" width={} height={}></header>",
        LOGO.0, LOGO.1, LOGO.2
    );
    for (name, w, h) in PAGE_IMAGES {
        body.push_str(&format!(
            "<img src=\"/img/{n}/{name}\" alt=\"{name}\" width={w} height={h}>"
        ));
    }
    (head, body)
}

/// What the asset at `path` is, judged by where the site keeps each kind.
pub(super) fn kind_of(path: &str) -> Option<AssetKind> {
    if path.starts_with("/static/css/") {
        Some(AssetKind::Stylesheet)
    } else if path.starts_with("/static/js/") {
        Some(AssetKind::Script)
    } else if path.starts_with("/static/font/") {
        Some(AssetKind::Font)
    } else if path.starts_with("/static/img/") || path.starts_with("/img/") {
        Some(AssetKind::Image)
    } else {
        None
    }
}

/// The bytes and content type of the asset at `path`, or `None` if there is none.
pub(super) fn asset(path: &str) -> Option<(&'static str, Vec<u8>)> {
    if let Some((_, size)) = STYLESHEETS.iter().find(|(p, _)| *p == path) {
        return Some(("text/css", stylesheet(path, *size).into_bytes()));
    }
    if let Some((_, size)) = SCRIPTS.iter().find(|(p, _)| *p == path) {
        return Some(("text/javascript", script(path, *size).into_bytes()));
    }
    if path == FONT.0 {
        return Some(("font/woff2", font(FONT.1)));
    }
    if path == LOGO.0 {
        return Some(("image/png", png(LOGO.1, LOGO.2, 7)));
    }
    let rest = path.strip_prefix("/img/")?;
    let (page, name) = rest.split_once('/')?;
    let page: u32 = page.parse().ok()?;
    let (_, w, h) = PAGE_IMAGES.iter().find(|(n, _, _)| *n == name)?;
    Some(("image/png", png(*w, *h, page)))
}

/// A stylesheet of about `size` bytes: many small rules, as a CSS framework has.
fn stylesheet(path: &str, size: usize) -> String {
    let mut css = String::with_capacity(size + 256);
    if path == STYLESHEETS[0].0 {
        css.push_str(&format!(
            "@font-face{{font-family:DemoSans;src:url(\"{}\") format(\"woff2\");\
             font-display:swap}}\nbody{{font-family:DemoSans,sans-serif;margin:0 auto;\
             max-width:60em;line-height:1.5}}\n",
            FONT.0
        ));
    }
    let mut rng = XorShift::new(seed_of(path));
    let mut i = 0;
    while css.len() < size {
        let r = rng.next();
        css.push_str(&format!(
            ".c{i}-{:x}{{margin:{}px {}px;padding:{}px;color:#{:06x};border:1px solid #{:06x}}}\n",
            r & 0xfff,
            r % 24,
            (r >> 8) % 32,
            (r >> 16) % 16,
            (r >> 20) & 0xff_ffff,
            (r >> 32) & 0xff_ffff,
        ));
        i += 1;
    }
    css
}

/// A script of about `size` bytes that parses a table of strings and hashes it. It
/// touches no element, so a page reads the same with or without it.
fn script(path: &str, size: usize) -> String {
    let mut js = String::with_capacity(size + 256);
    js.push_str("(function(){const table=[");
    let mut rng = XorShift::new(seed_of(path));
    while js.len() + 200 < size {
        let r = rng.next();
        js.push_str(&format!("\"{r:016x}{:016x}\",", rng.next()));
    }
    js.push_str(
        "];let h=0;for(const s of table){for(let i=0;i<s.length;i++){h=(h*31+s.charCodeAt(i))|0}}\
         window.__demoHash=(window.__demoHash||0)^h;})();\n",
    );
    js
}

/// A font file of `size` bytes: the WOFF2 header fields Chromium checks first
/// (signature, flavour, length), then deterministic bytes. Chromium requests it like any
/// web font and then rejects it as undecodable, falling back to `sans-serif`; the text
/// stays the same.
fn font(size: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(b"wOF2");
    bytes.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // flavour: TrueType
    bytes.extend_from_slice(&(size as u32).to_be_bytes());
    let mut rng = XorShift::new(seed_of(FONT.0));
    while bytes.len() < size {
        bytes.extend_from_slice(&rng.next().to_le_bytes());
    }
    bytes.truncate(size);
    bytes
}

/// A valid, uncompressed RGB PNG of `width` × `height` with a gradient keyed by `seed`.
/// Stored (uncompressed) deflate blocks keep the encoder to a few lines; the file is
/// about `3 × width × height` bytes, the size of a photo of twice the pixels as JPEG.
pub(super) fn png(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let row = 1 + 3 * width as usize;
    let mut raw = Vec::with_capacity(row * height as usize);
    for y in 0..height {
        raw.push(0); // filter: none
        for x in 0..width {
            raw.push((x.wrapping_mul(3).wrapping_add(seed)) as u8);
            raw.push((y.wrapping_mul(5).wrapping_add(seed.wrapping_mul(7))) as u8);
            raw.push(((x ^ y).wrapping_add(seed.wrapping_mul(13))) as u8);
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let mut blocks = raw.chunks(0xffff).peekable();
    while let Some(block) = blocks.next() {
        zlib.push(u8::from(blocks.peek().is_none())); // BFINAL on the last, BTYPE 00
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace

    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [
        (b"IHDR", &ihdr[..]),
        (b"IDAT", &zlib[..]),
        (b"IEND", &[][..]),
    ] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = png.len();
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        let crc = crc32(&png[start..]);
        png.extend_from_slice(&crc.to_be_bytes());
    }
    png
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A stable seed from a name (FNV-1a), so each file has its own bytes.
fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A tiny deterministic generator; quality does not matter, repeatability does.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_asset_is_served_with_its_size() {
        for a in page_assets(3) {
            let (ctype, body) = asset(&a.path).unwrap_or_else(|| panic!("{} missing", a.path));
            assert!(body.len() > 4 * 1024, "{} is {} bytes", a.path, body.len());
            let expected = match a.kind {
                AssetKind::Stylesheet => "text/css",
                AssetKind::Script => "text/javascript",
                AssetKind::Font => "font/woff2",
                AssetKind::Image => "image/png",
            };
            assert_eq!(ctype, expected, "{}", a.path);
        }
        assert_eq!(asset(STYLESHEETS[0].0).unwrap().1.len() / 1024, 40);
        assert!(asset("/img/3/nope.png").is_none());
        assert!(asset("/img/x/hero.png").is_none());
        assert!(asset("/static/css/other.css").is_none());
    }

    #[test]
    fn every_asset_path_says_its_kind() {
        for a in page_assets(8) {
            assert_eq!(kind_of(&a.path), Some(a.kind), "{}", a.path);
        }
        assert_eq!(kind_of("/p/1"), None);
    }

    #[test]
    fn assets_are_the_same_bytes_every_time() {
        for a in page_assets(5) {
            assert_eq!(asset(&a.path), asset(&a.path), "{}", a.path);
        }
        assert_ne!(asset("/img/1/hero.png"), asset("/img/2/hero.png"));
    }

    #[test]
    fn images_are_valid_pngs_of_their_size() {
        let png = png(240, 135, 9);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 240);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 135);
        // The IHDR CRC covers type and data.
        assert_eq!(
            u32::from_be_bytes(png[29..33].try_into().unwrap()),
            crc32(&png[12..29])
        );
        assert!(png.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82]));
    }

    #[test]
    fn checksums_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn the_font_is_declared_and_scripts_touch_no_links() {
        let css = stylesheet(STYLESHEETS[0].0, STYLESHEETS[0].1);
        assert!(css.contains(FONT.0) && css.contains("@font-face"));
        for (path, size) in SCRIPTS {
            let js = script(path, size);
            assert!(!js.contains("document") && !js.contains("title"), "{path}");
        }
        assert_eq!(&font(FONT.1)[..4], b"wOF2");
    }
}
