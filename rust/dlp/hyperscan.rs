//! The Vectorscan/Hyperscan candidate finder: one block-mode database of every rule, linked statically from
//! `libhs.a` (Debian `libvectorscan-dev`), hand-written bindings for the eight functions used.
//!
//! Design: end offsets only (no `HS_FLAG_SOM_LEFTMOST`). One scan reports every match end `e` of every rule
//! without keywords (compiled with `HS_FLAG_PREFILTER`: a relaxed pattern whose language contains the real one,
//! so every real match end is reported, and bounded repeats such as the IBAN groups scan 10x faster); a match of
//! a rule with maximum length `L` lies inside `[e - L, e]`. Rules with keywords contribute their keywords as
//! caseless literals instead (Vectorscan's literal matcher), with the window `[k_end - L, k_start + L]`, exactly
//! as the Aho-Corasick prefilter of the pure-Rust engine: their full patterns (the email local part, the generic
//! secret's alternation) scan 20-100x slower in Vectorscan than their literals. The per-rule Rust regex confirms
//! only inside the windows and defines the spans. Start-of-match tracking would cost Vectorscan speed, and the spans
//! would still need the Rust regex for leftmost-first semantics, captures and validators. A pattern Vectorscan
//! rejects is not an error: that rule is confirmed by the Rust regex over the whole text.

use std::ffi::{CString, c_char, c_int, c_uint, c_ulonglong, c_void};
use std::sync::Mutex;

use super::DlpError;
use super::engine::{CompiledRule, WindowSet};

#[repr(C)]
struct HsDatabase {
    _private: [u8; 0],
}

#[repr(C)]
struct HsScratch {
    _private: [u8; 0],
}

#[repr(C)]
struct HsCompileError {
    message: *mut c_char,
    expression: c_int,
}

type MatchHandler = unsafe extern "C" fn(c_uint, c_ulonglong, c_ulonglong, c_uint, *mut c_void) -> c_int;

const HS_SUCCESS: c_int = 0;
const HS_SCAN_TERMINATED: c_int = -3;
const HS_FLAG_CASELESS: c_uint = 1;
const HS_FLAG_PREFILTER: c_uint = 128;
const HS_MODE_BLOCK: c_uint = 1;

#[link(name = "hs", kind = "static")]
unsafe extern "C" {
    fn hs_compile_multi(
        expressions: *const *const c_char,
        flags: *const c_uint,
        ids: *const c_uint,
        elements: c_uint,
        mode: c_uint,
        platform: *const c_void,
        db: *mut *mut HsDatabase,
        error: *mut *mut HsCompileError,
    ) -> c_int;
    fn hs_free_compile_error(error: *mut HsCompileError) -> c_int;
    fn hs_free_database(db: *mut HsDatabase) -> c_int;
    fn hs_alloc_scratch(db: *const HsDatabase, scratch: *mut *mut HsScratch) -> c_int;
    fn hs_clone_scratch(src: *const HsScratch, dest: *mut *mut HsScratch) -> c_int;
    fn hs_free_scratch(scratch: *mut HsScratch) -> c_int;
    fn hs_scan(
        db: *const HsDatabase,
        data: *const c_char,
        length: c_uint,
        flags: c_uint,
        scratch: *mut HsScratch,
        on_event: Option<MatchHandler>,
        context: *mut c_void,
    ) -> c_int;
    fn hs_valid_platform() -> c_int;
}

/// Debian's `libhs.a` is compiled as PIE, not PIC: code it inlined from libstdc++ reads glibc's
/// `__libc_single_threaded` through a PC-relative relocation, which a shared object (our extension) cannot bind to
/// `libc.so`. This local definition satisfies it. The value 0 means "threads may exist", so that libstdc++ code
/// always takes its atomic path, which is correct in every case. In an executable (the test binaries) this
/// definition interposes glibc's, which glibc itself may write (only ever to 0): hence writable memory.
#[unsafe(no_mangle)]
#[used]
#[allow(non_upper_case_globals)]
static __libc_single_threaded: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Whether this CPU can run the library (SSSE3 at least).
pub fn valid_platform() -> bool {
    // SAFETY: no arguments, no preconditions.
    unsafe { hs_valid_platform() == HS_SUCCESS }
}

struct Database(*mut HsDatabase);

// SAFETY: a compiled database is immutable and documented as safe to scan from many threads at once.
unsafe impl Send for Database {}
// SAFETY: as above; only `hs_scan` (read-only) and `hs_free_database` (in Drop, exclusive) touch it.
unsafe impl Sync for Database {}

impl Drop for Database {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a successful hs_compile_multi and is freed exactly once.
        unsafe { hs_free_database(self.0) };
    }
}

struct Scratch(*mut HsScratch);

// SAFETY: a scratch space may move between threads; it is used by one scan at a time (it lives in a Mutex pool
// and is taken out for the duration of one scan).
unsafe impl Send for Scratch {}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: allocated by hs_alloc_scratch/hs_clone_scratch, freed exactly once, not in use (we own it).
        unsafe { hs_free_scratch(self.0) };
    }
}

/// Compiled database + scratch pool + which rules Vectorscan could not take.
pub struct HsFinder {
    db: Database,
    proto: Mutex<Scratch>,
    pool: Mutex<Vec<Scratch>>,
    /// Vectorscan pattern id -> (rule index, keyword length or 0 for the rule's own pattern).
    hs_rule: Vec<(usize, usize)>,
    /// Rules always confirmed by the Rust regex (Vectorscan rejected the pattern).
    always: Vec<usize>,
}

/// A Vectorscan pattern: (rule, keyword length or 0, expression, flags).
type HsPattern = (usize, usize, CString, c_uint);

fn compile(patterns: &[HsPattern]) -> Result<Database, (Option<usize>, String)> {
    let ptrs: Vec<*const c_char> = patterns.iter().map(|p| p.2.as_ptr()).collect();
    let flags: Vec<c_uint> = patterns.iter().map(|p| p.3).collect();
    let ids: Vec<c_uint> = (0..patterns.len()).map(|i| i as c_uint).collect();
    let mut db: *mut HsDatabase = std::ptr::null_mut();
    let mut err: *mut HsCompileError = std::ptr::null_mut();
    // SAFETY: the three arrays have `patterns.len()` elements and outlive the call; the strings are
    // NUL-terminated; db/err are valid out-pointers.
    let rc = unsafe {
        hs_compile_multi(
            ptrs.as_ptr(),
            flags.as_ptr(),
            ids.as_ptr(),
            patterns.len() as c_uint,
            HS_MODE_BLOCK,
            std::ptr::null(),
            &mut db,
            &mut err,
        )
    };
    if rc == HS_SUCCESS && !db.is_null() {
        return Ok(Database(db));
    }
    let mut which = None;
    let mut message = format!("hs_compile_multi failed ({rc})");
    if !err.is_null() {
        // SAFETY: on failure `err` points to a valid hs_compile_error_t whose message is a C string; we read it
        // before freeing it once.
        unsafe {
            let e = &*err;
            if !e.message.is_null() {
                message = std::ffi::CStr::from_ptr(e.message).to_string_lossy().into_owned();
            }
            if e.expression >= 0 {
                which = Some(e.expression as usize);
            }
            hs_free_compile_error(err);
        }
    }
    Err((which, message))
}

impl HsFinder {
    pub fn new(rules: &[CompiledRule]) -> Result<HsFinder, DlpError> {
        if !valid_platform() {
            return Err(DlpError::Engine(
                "this CPU cannot run Vectorscan (hs_valid_platform)".into(),
            ));
        }
        let mut patterns = Vec::new();
        let mut always = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            if r.rule.keywords.is_empty() {
                match CString::new(r.rule.pattern.as_str()) {
                    Ok(c) => patterns.push((i, 0, c, HS_FLAG_PREFILTER)),
                    Err(_) => always.push(i),
                }
                continue;
            }
            for k in &r.rule.keywords {
                let escaped: String = k.bytes().map(|b| format!("\\x{b:02x}")).collect();
                match CString::new(escaped) {
                    Ok(c) => patterns.push((i, k.len(), c, HS_FLAG_CASELESS)),
                    Err(_) => always.push(i),
                }
            }
        }
        always.dedup();
        let db = loop {
            if patterns.is_empty() {
                return Err(DlpError::Engine("no pattern compiles with Vectorscan".into()));
            }
            match compile(&patterns) {
                Ok(db) => break db,
                Err((Some(bad), _)) if bad < patterns.len() => {
                    let rule = patterns.remove(bad).0;
                    patterns.retain(|p| p.0 != rule);
                    always.push(rule);
                }
                Err((_, msg)) => return Err(DlpError::Engine(msg)),
            }
        };
        let mut scratch: *mut HsScratch = std::ptr::null_mut();
        // SAFETY: db is a valid database, scratch a valid out-pointer (null: allocate new).
        let rc = unsafe { hs_alloc_scratch(db.0, &mut scratch) };
        if rc != HS_SUCCESS || scratch.is_null() {
            return Err(DlpError::Engine(format!("hs_alloc_scratch failed ({rc})")));
        }
        always.sort_unstable();
        always.dedup();
        Ok(HsFinder {
            db,
            proto: Mutex::new(Scratch(scratch)),
            pool: Mutex::new(Vec::new()),
            hs_rule: patterns.into_iter().map(|p| (p.0, p.1)).collect(),
            always,
        })
    }

    /// Rule indices Vectorscan did not compile (confirmed by Rust every time).
    pub fn fallback_rules(&self) -> &[usize] {
        &self.always
    }

    fn take_scratch(&self) -> Option<Scratch> {
        if let Some(s) = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Some(s);
        }
        let proto = self.proto.lock().unwrap_or_else(|e| e.into_inner());
        let mut s: *mut HsScratch = std::ptr::null_mut();
        // SAFETY: proto is a valid scratch, not in use by a scan (it is never handed out), s a valid out-pointer.
        let rc = unsafe { hs_clone_scratch(proto.0, &mut s) };
        (rc == HS_SUCCESS && !s.is_null()).then_some(Scratch(s))
    }

    pub(crate) fn candidates(&self, hay: &[u8], active: &[bool], rules: &[CompiledRule], ws: &mut WindowSet) {
        let mut ctx = ScanCtx {
            active,
            rules,
            hs_rule: &self.hs_rule,
            len: hay.len(),
            ws,
        };
        let ok = match (c_uint::try_from(hay.len()), self.take_scratch()) {
            (Ok(len), Some(scratch)) => {
                // SAFETY: db and scratch are valid and the scratch is ours alone for this call; data/len describe
                // a live slice; the context points to `ctx`, which outlives the call and is only touched by
                // `on_match` during it.
                let rc = unsafe {
                    hs_scan(
                        self.db.0,
                        hay.as_ptr().cast::<c_char>(),
                        len,
                        0,
                        scratch.0,
                        Some(on_match),
                        (&mut ctx as *mut ScanCtx<'_>).cast::<c_void>(),
                    )
                };
                self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(scratch);
                rc == HS_SUCCESS || rc == HS_SCAN_TERMINATED
            }
            _ => false,
        };
        if !ok {
            // Could not scan (over 4 GiB, no scratch): confirm every active rule over the whole text.
            for &(r, _) in self.hs_rule.iter().filter(|&&(r, _)| active[r]) {
                ctx.ws.add(r, (0, hay.len()));
            }
        }
        for &r in self.always.iter().filter(|&&r| active[r]) {
            ctx.ws.add(r, (0, hay.len()));
        }
    }
}

struct ScanCtx<'a> {
    active: &'a [bool],
    rules: &'a [CompiledRule],
    hs_rule: &'a [(usize, usize)],
    len: usize,
    ws: &'a mut WindowSet,
}

/// Records the window around each match end (of a pattern or of a keyword).
unsafe extern "C" fn on_match(
    id: c_uint,
    _from: c_ulonglong,
    to: c_ulonglong,
    _flags: c_uint,
    ctx: *mut c_void,
) -> c_int {
    // SAFETY: ctx is the `&mut ScanCtx` passed to hs_scan by `candidates`, alive and unaliased during the scan.
    let ctx = unsafe { &mut *ctx.cast::<ScanCtx<'_>>() };
    if let (Some(&(r, kw)), Ok(end)) = (ctx.hs_rule.get(id as usize), usize::try_from(to)) {
        if ctx.active[r] {
            let w = match (kw, ctx.rules[r].max_len) {
                (0, _) => ctx.rules[r].window_ending_at(end),
                // A match containing the keyword [end - kw, end) starts and ends within max_len of it.
                (kw, Some(l)) => (
                    end.saturating_sub(l),
                    (end - kw.min(end)).saturating_add(l).min(ctx.len),
                ),
                (_, None) => (0, ctx.len),
            };
            ctx.ws.add(r, w);
        }
    }
    0
}
