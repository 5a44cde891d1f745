//! A crawl's input and output files: which input, whether the output may be written
//! (never the input itself), creating it, and reading input lines on a thread of their
//! own. Never starts a browser.

use std::fs::File;
use std::io::{self, BufRead, BufWriter, IsTerminal, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tokio::sync::mpsc;

use crate::args::CrawlArgs;
use crate::browser::Fatal;

/// Where the URLs come from.
pub enum Input {
    Demo,
    File(File),
    Stdin,
}

pub fn open_input(args: &CrawlArgs) -> Result<Input, Fatal> {
    if args.demo {
        return Ok(Input::Demo);
    }
    match &args.input {
        Some(path) if path.as_os_str() == "-" => Ok(Input::Stdin),
        Some(path) => File::open(path)
            .map(Input::File)
            .map_err(|e| Fatal::usage(format!("cannot read the URL list {}: {e}", path.display()))),
        None if io::stdin().is_terminal() => Err(Fatal::usage(
            "no URLs: give a file with one URL per line, `-` to read them from stdin, or \
             --demo to crawl the embedded demo site",
        )),
        None => Ok(Input::Stdin),
    }
}

/// Refuses an output path that cannot be written or is the input itself, without
/// touching it: the file is created only once the crawl can start ([`open_output`]).
pub fn check_output(path: Option<&Path>, input: &Input) -> Result<(), Fatal> {
    let Some(path) = path else {
        return Ok(());
    };
    let Ok(output) = std::fs::metadata(path) else {
        return Ok(()); // not there yet: created later, and errors reported then
    };
    if output.is_dir() {
        return Err(Fatal::usage(format!(
            "cannot write the output to {}: it is a directory",
            path.display()
        )));
    }
    let input = match input {
        Input::Demo => None,
        Input::File(file) => file.metadata().ok(),
        Input::Stdin => io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .and_then(|fd| File::from(fd).metadata().ok()),
    };
    // The same file, however it is named: the same inode on the same device.
    if input.is_some_and(|i| i.dev() == output.dev() && i.ino() == output.ino()) {
        return Err(Fatal::usage(format!(
            "the output {} is also the input: writing it would destroy the URL list; \
             choose another -o",
            path.display()
        )));
    }
    Ok(())
}

/// Creates (or truncates) the output: stdout without a path.
pub fn open_output(path: Option<&Path>) -> Result<Box<dyn Write + Send>, Fatal> {
    match path {
        Some(path) => {
            let file = File::create(path)
                .map_err(|e| Fatal::usage(format!("cannot create {}: {e}", path.display())))?;
            Ok(Box::new(BufWriter::new(file)))
        }
        None => Ok(Box::new(io::stdout())),
    }
}

/// Reads input lines on a thread of its own (stdin reads block), trimmed, without blank
/// lines and `#` comments. Non-UTF-8 bytes are replaced, never fatal.
pub fn spawn_reader(
    mut source: Box<dyn BufRead + Send>,
    tx: mpsc::Sender<Result<String, String>>,
) -> Result<(), Fatal> {
    std::thread::Builder::new()
        .name("cdpmux-input".into())
        .spawn(move || {
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match source.read_until(b'\n', &mut buf) {
                    Ok(0) => return,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim();
                        if line.is_empty() || line.starts_with('#') {
                            continue;
                        }
                        if tx.blocking_send(Ok(line.to_owned())).is_err() {
                            return; // the crawl is over
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e.to_string()));
                        return;
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(|e| Fatal::failed(format!("could not start the input reader: {e}")))
}
