//! The streaming hot path: an upstream OpenAI-compatible chat stream in, the client's stream out.
//!
//! One call per upstream network read: [`ChunkRelay::feed`] takes the raw bytes, frames them with
//! [`crate::sse::SseParser`], and returns the bytes to send to the client, always framed as `data: <json>\n\n`.
//! For each data frame:
//!
//! - `[DONE]`: every choice's filter is finished first (its held-back text goes out in its own chunk), then
//!   `data: [DONE]` is written and the rest of the upstream stream is ignored.
//! - `{"error": ...}`: passed through unchanged and recorded ([`ChunkRelay::error`]).
//! - a chat chunk: `model` is replaced by the public model name when one is set; each choice's `delta.content`
//!   goes through that choice's [`TextFilter`] and is replaced by what the filter releases; so do the fragments of
//!   each streamed tool call's `function.arguments` (one filter per choice and tool call `index`) and of the
//!   legacy `function_call.arguments`, an emptied fragment being dropped. A choice left with nothing to say is
//!   dropped, and a chunk left with no choice (and no usage) is not sent. When a choice has a `finish_reason`, its
//!   filters are finished and the released text is sent in chunks *before* the one carrying the `finish_reason`
//!   (tool-call arguments in `tool_calls[{index, function: {arguments}}]` chunks; the finishing chunk's own
//!   rewritten delta goes out first, on its own). `id`, `created` and every other value are kept (key order may
//!   change when a chunk is rewritten).
//! - a filter that reports `blocked`: the text it released with that report is sent, then a final chunk for that
//!   choice with `finish_reason: "content_filter"`, then `data: [DONE]`; the rest of the upstream is ignored.
//! - anything that is not JSON: passed through unchanged.
//!
//! The common filtered chunk (one choice, text in `delta.content`, no finish) takes a fast path: the released text
//! is spliced into the frame's bytes, no JSON tree is built, and key order is kept.
//!
//! Without a filter and without a model rewrite, frames are copied through as they arrived; the JSON is only
//! peeked at (borrowed, no tree built) to record usage, the finish reason and the content length.
//!
//! [`ChunkRelay::finish`] ends the stream: a last unterminated frame is processed (lenient EOF, see
//! [`crate::sse`]) when it is `[DONE]` or complete JSON (a frame cut in half is dropped), and the filters are finished, but `[DONE]` is *not* invented when the upstream did not send
//! it: [`ChunkRelay::done`] stays false, so the caller can tell a truncated upstream from a complete one.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use crate::filter::{FilterOutput, FindingNote, TextFilter};
use crate::sse::{SseError, SseLimits, SseParser};

/// Builds one filter per choice index of a stream.
pub type FilterFactory = Box<dyn Fn() -> Box<dyn TextFilter> + Send + Sync>;

const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayError {
    Sse(SseError),
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sse(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for RelayError {}

impl From<SseError> for RelayError {
    fn from(err: SseError) -> Self {
        Self::Sse(err)
    }
}

/// What one call produced, plus the stream's state so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayOutput {
    /// Bytes for the client.
    pub bytes: Vec<u8>,
    /// `data: [DONE]` has been sent: the client stream is over.
    pub done: bool,
    /// A filter blocked the stream (`done` is then true as well).
    pub blocked: bool,
    /// `(prompt_tokens, completion_tokens)` from the upstream's last `usage`.
    pub usage: Option<(u64, u64)>,
    /// The last `finish_reason` seen or set (`content_filter` after a block).
    pub finish_reason: Option<String>,
    /// Findings reported by the filters during this call.
    pub findings: Vec<FindingNote>,
    /// The upstream error object, as JSON, when a frame was `{"error": ...}`.
    pub error: Option<String>,
    /// Characters of content released to the client so far.
    pub content_chars: u64,
}

struct ChoiceState {
    index: u64,
    /// The filter of `delta.content`.
    filter: Box<dyn TextFilter>,
    /// The filters of tool-call arguments, by tool call index (`None`: the legacy `function_call`), in order of
    /// first appearance.
    args: Vec<(Option<u64>, Box<dyn TextFilter>)>,
    finished: bool,
}

/// Which filter released a piece of text at the end of a choice.
enum Flushed {
    Content,
    Args(Option<u64>),
}

impl ChoiceState {
    fn args_filter(&mut self, key: Option<u64>, factory: &FilterFactory) -> &mut Box<dyn TextFilter> {
        let slot = match self.args.iter().position(|(k, _)| *k == key) {
            Some(slot) => slot,
            None => {
                self.args.push((key, factory()));
                self.args.len() - 1
            }
        };
        &mut self.args[slot].1
    }

    /// Finishes every filter of the choice, content first; stops at the first that blocks (returns true).
    fn finish_all(&mut self, flushed: &mut Vec<(Flushed, String)>, findings: &mut Vec<FindingNote>) -> bool {
        let mut text = String::new();
        let blocked = absorb(self.filter.finish(), &mut text, findings);
        if !text.is_empty() {
            flushed.push((Flushed::Content, text));
        }
        if blocked {
            return true;
        }
        for (key, filter) in &mut self.args {
            let mut text = String::new();
            let blocked = absorb(filter.finish(), &mut text, findings);
            if !text.is_empty() {
                flushed.push((Flushed::Args(*key), text));
            }
            if blocked {
                return true;
            }
        }
        false
    }
}

/// The relay's state apart from the SSE parser, so that the parser can call back into it.
struct State {
    public_model: Option<String>,
    factory: Option<FilterFactory>,
    choices: Vec<ChoiceState>,
    /// `id`, `object`, `created`, `model`, `system_fingerprint` of the first chunk, for the chunks we write.
    template: Option<Map<String, Value>>,
    done: bool,
    blocked: bool,
    usage: Option<(u64, u64)>,
    finish_reason: Option<String>,
    findings: Vec<FindingNote>,
    error: Option<String>,
    content_chars: u64,
    /// The upstream has ended: a frame that is not complete JSON is a truncated one and is dropped.
    at_eof: bool,
    /// What the content filter returned on the fast path when the chunk needs the full rewrite after all.
    pending: Option<FilterOutput>,
}

/// See the module docs.
pub struct ChunkRelay {
    parser: SseParser,
    state: State,
}

impl ChunkRelay {
    pub fn new(public_model: Option<String>, filter_factory: Option<FilterFactory>, limits: SseLimits) -> Self {
        Self {
            parser: SseParser::new(limits),
            state: State {
                public_model,
                factory: filter_factory,
                choices: Vec::new(),
                template: None,
                done: false,
                blocked: false,
                usage: None,
                finish_reason: None,
                findings: Vec::new(),
                error: None,
                content_chars: 0,
                at_eof: false,
                pending: None,
            },
        }
    }

    /// Relay one upstream read.
    pub fn feed(&mut self, input: &[u8]) -> Result<RelayOutput, RelayError> {
        let mut bytes = Vec::with_capacity(input.len() + 64);
        self.feed_into(input, &mut bytes)?;
        Ok(self.output(bytes))
    }

    /// End of the upstream stream.
    pub fn finish(&mut self) -> RelayOutput {
        let mut bytes = Vec::new();
        self.finish_into(&mut bytes);
        self.output(bytes)
    }

    /// Like [`Self::feed`], appending to `out` and leaving the state to the accessors.
    pub fn feed_into(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), RelayError> {
        if self.state.done {
            return Ok(());
        }
        let state = &mut self.state;
        self.parser
            .feed_with(input, &mut |event| state.on_data(event.data, out))?;
        Ok(())
    }

    /// Like [`Self::finish`], appending to `out`.
    pub fn finish_into(&mut self, out: &mut Vec<u8>) {
        if self.state.done {
            return;
        }
        self.state.at_eof = true;
        let state = &mut self.state;
        self.parser.finish_with(&mut |event| state.on_data(event.data, out));
        if !self.state.done {
            self.state.flush_filters(out);
        }
    }

    pub fn done(&self) -> bool {
        self.state.done
    }

    pub fn blocked(&self) -> bool {
        self.state.blocked
    }

    pub fn usage(&self) -> Option<(u64, u64)> {
        self.state.usage
    }

    pub fn finish_reason(&self) -> Option<&str> {
        self.state.finish_reason.as_deref()
    }

    pub fn error(&self) -> Option<&str> {
        self.state.error.as_deref()
    }

    pub fn content_chars(&self) -> u64 {
        self.state.content_chars
    }

    /// Findings reported and not yet taken.
    pub fn findings(&self) -> &[FindingNote] {
        &self.state.findings
    }

    /// Findings reported since the last call to this method (or to `feed`/`finish`, which also take them).
    pub fn take_findings(&mut self) -> Vec<FindingNote> {
        std::mem::take(&mut self.state.findings)
    }

    fn output(&mut self, bytes: Vec<u8>) -> RelayOutput {
        RelayOutput {
            bytes,
            done: self.state.done,
            blocked: self.state.blocked,
            usage: self.state.usage,
            finish_reason: self.state.finish_reason.clone(),
            findings: self.take_findings(),
            error: self.state.error.clone(),
            content_chars: self.state.content_chars,
        }
    }
}

/// The borrowed view of a chunk used on the copy-through path.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(default, borrow)]
    choices: Vec<PeekChoice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct PeekChoice<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    delta: Option<PeekDelta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct PeekDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
    #[serde(default)]
    function_call: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl State {
    fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if data.trim_ascii() == b"[DONE]" {
            self.flush_filters(out);
            if !self.done {
                out.extend_from_slice(DONE_FRAME);
                self.done = true;
            }
            return;
        }
        if self.factory.is_none() {
            self.copy_through(data, out);
            return;
        }
        if self.splice_content(data, out) {
            return;
        }
        match serde_json::from_slice::<Value>(data) {
            Ok(Value::Object(chunk)) => self.rewrite(chunk, data, out),
            Err(_) if self.at_eof => {}
            _ => write_raw_frame(out, data),
        }
        self.pending = None;
    }

    /// The fast path for the common chunk, one choice with text in `delta.content` and nothing else to filter
    /// or finish: the released text is spliced into the frame's bytes in place of the original string (and the
    /// public model name in place of `model`), with no JSON tree built. Returns false when the chunk needs the
    /// full rewrite; the filter's output is then left in `pending` for it when the filter was already run.
    fn splice_content(&mut self, data: &[u8], out: &mut Vec<u8>) -> bool {
        if self.template.is_none() {
            return false;
        }
        let Ok(peek) = serde_json::from_slice::<Peek<'_>>(data) else {
            return false;
        };
        let [choice] = peek.choices.as_slice() else {
            return false;
        };
        let Some(delta) = choice.delta.as_ref().filter(|_| choice.finish_reason.is_none()) else {
            return false;
        };
        let Some(content) = delta.content.as_deref() else {
            return false;
        };
        if peek.error.is_some() || delta.tool_calls.is_some() || delta.function_call.is_some() {
            return false;
        }
        let Some(content_span) = content_span(data) else {
            return false;
        };
        let model_span = match &self.public_model {
            Some(_) => top_level_value_span(data, b"model"),
            None => None,
        };
        let Some(slot) = self.choice_slot(choice.index.unwrap_or(0)) else {
            return false;
        };
        let state = &mut self.choices[slot];
        if state.finished {
            return false;
        }
        let output = state.filter.push(content);
        if output.blocked || output.text.is_empty() {
            self.pending = Some(output);
            return false;
        }
        if let Some(usage) = peek.usage {
            self.usage = Some((usage.prompt_tokens, usage.completion_tokens));
        }
        self.findings.extend(output.findings);
        self.content_chars += output.text.chars().count() as u64;
        out.reserve(data.len() + output.text.len() + 16);
        out.extend_from_slice(b"data: ");
        let mut at = 0;
        let mut splices = [
            (content_span, None),
            (model_span.unwrap_or((0, 0)), self.public_model.as_deref()),
        ];
        splices.sort_by_key(|((start, _), _)| *start);
        for ((start, end), model) in splices {
            if start == end {
                continue; // no model span
            }
            out.extend_from_slice(&data[at..start]);
            // Serializing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, model.unwrap_or(&output.text));
            at = end;
        }
        out.extend_from_slice(&data[at..]);
        out.extend_from_slice(b"\n\n");
        true
    }

    fn copy_through(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let peeked = serde_json::from_slice::<Peek<'_>>(data);
        if peeked.is_err() && self.at_eof && serde_json::from_slice::<IgnoredAny>(data).is_err() {
            return;
        }
        let Ok(peek) = peeked else {
            write_raw_frame(out, data);
            return;
        };
        if peek.error.is_some() {
            self.record_error(data);
        }
        if let Some(usage) = peek.usage {
            self.usage = Some((usage.prompt_tokens, usage.completion_tokens));
        }
        for choice in peek.choices {
            if let Some(content) = choice.delta.and_then(|d| d.content) {
                self.content_chars += content.chars().count() as u64;
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason.into_owned());
            }
        }
        // The frame is valid JSON (it was just deserialized), so the span scan below sees a well-formed object.
        match (&self.public_model, top_level_value_span(data, b"model")) {
            (Some(public), Some((start, end))) if peek.error.is_none() => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&data[..start]);
                // Serializing a string into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, public);
                out.extend_from_slice(&data[end..]);
                out.extend_from_slice(b"\n\n");
            }
            _ => write_raw_frame(out, data),
        }
    }

    fn record_error(&mut self, data: &[u8]) {
        if let Ok(Value::Object(mut frame)) = serde_json::from_slice::<Value>(data) {
            if let Some(err) = frame.remove("error").filter(|e| !e.is_null()) {
                self.error = Some(err.to_string());
            }
        }
    }

    fn rewrite(&mut self, mut chunk: Map<String, Value>, data: &[u8], out: &mut Vec<u8>) {
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            self.record_error(data);
            write_raw_frame(out, data);
            return;
        }
        if let (Some(public), Some(model)) = (&self.public_model, chunk.get_mut("model")) {
            *model = Value::String(public.clone());
        }
        if self.template.is_none() {
            let keys = ["id", "object", "created", "model", "system_fingerprint"];
            self.template = Some(
                keys.iter()
                    .filter_map(|k| Some((k.to_string(), chunk.get(*k)?.clone())))
                    .collect(),
            );
        }
        if let Some(usage) = chunk.get("usage").and_then(|u| Usage::deserialize(u).ok()) {
            self.usage = Some((usage.prompt_tokens, usage.completion_tokens));
        }
        let mut before = Vec::new();
        let mut blocked_index = None;
        let mut had_choices = false;
        if let Some(Value::Array(choices)) = chunk.get_mut("choices") {
            had_choices = !choices.is_empty();
            let mut kept = Vec::with_capacity(choices.len());
            for (position, mut choice) in std::mem::take(choices).into_iter().enumerate() {
                let index = choice.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
                if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                    self.finish_reason = Some(reason.to_owned());
                }
                if self.factory.is_some() {
                    if self.filter_choice(index, &mut choice, &mut before) {
                        if let Some(obj) = choice.as_object_mut() {
                            obj.insert("finish_reason".into(), Value::Null);
                        }
                        if !choice_is_empty(&choice) {
                            kept.push(choice);
                        }
                        blocked_index = Some(index);
                        break;
                    }
                } else if let Some(content) = choice.pointer("/delta/content").and_then(Value::as_str) {
                    self.content_chars += content.chars().count() as u64;
                }
                if !choice_is_empty(&choice) {
                    kept.push(choice);
                }
            }
            *choices = kept;
        }
        for frame in before {
            write_json_frame(out, &frame);
        }
        let emptied = had_choices
            && chunk
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
            && chunk.get("usage").is_none_or(Value::is_null);
        if !emptied {
            write_json_frame(out, &Value::Object(chunk));
        }
        if let Some(index) = blocked_index {
            self.block(index, out);
        }
    }

    /// Runs one choice's content and tool-call arguments through their filters, rewriting the delta in place;
    /// returns true when a filter blocked. A finishing choice's rewritten delta and everything its filters still
    /// held go out in chunks of their own (`before`), ahead of the chunk that carries the `finish_reason`.
    fn filter_choice(&mut self, index: u64, choice: &mut Value, before: &mut Vec<Value>) -> bool {
        let finishing = choice.get("finish_reason").is_some_and(|r| !r.is_null());
        let pending = self.pending.take();
        let Some(slot) = self.choice_slot(index) else {
            return false;
        };
        let Some(factory) = self.factory.as_ref() else {
            return false;
        };
        let state = &mut self.choices[slot];
        // After this choice's finish_reason its filters are spent: further text is dropped.
        let spent = state.finished;
        let mut blocked = false;
        let mut findings = Vec::new();
        let mut content_released = 0u64;
        if let Some(Value::Object(delta)) = choice.get_mut("delta") {
            if let Some(Value::String(text)) = delta.get_mut("content") {
                let text = std::mem::take(text);
                let mut released = String::new();
                if !spent {
                    let output = match pending {
                        Some(output) => output,
                        None => state.filter.push(&text),
                    };
                    blocked = absorb(output, &mut released, &mut findings);
                }
                content_released = released.chars().count() as u64;
                if released.is_empty() {
                    delta.remove("content");
                } else {
                    delta.insert("content".into(), Value::String(released));
                }
            }
            if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
                for (position, call) in calls.iter_mut().enumerate() {
                    let key = Some(call.get("index").and_then(Value::as_u64).unwrap_or(position as u64));
                    let Some(Value::String(args)) = call.pointer_mut("/function/arguments") else {
                        continue;
                    };
                    if spent || blocked {
                        args.clear();
                    } else {
                        let filter = state.args_filter(key, factory);
                        let text = std::mem::take(args);
                        blocked = absorb(filter.push(&text), args, &mut findings);
                    }
                }
                calls.retain(|call| !tool_call_is_empty(call));
                if calls.is_empty() {
                    delta.remove("tool_calls");
                }
            }
            if let Some(call @ Value::Object(_)) = delta.get_mut("function_call") {
                if let Some(Value::String(args)) = call.get_mut("arguments") {
                    if spent || blocked {
                        args.clear();
                    } else {
                        let filter = state.args_filter(None, factory);
                        let text = std::mem::take(args);
                        blocked = absorb(filter.push(&text), args, &mut findings);
                    }
                }
                if function_is_empty(call) {
                    delta.remove("function_call");
                }
            }
        }
        let mut flushed = Vec::new();
        if finishing && !spent && !blocked {
            state.finished = true;
            blocked = state.finish_all(&mut flushed, &mut findings);
        }
        self.findings.extend(findings);
        self.content_chars += content_released;
        if finishing && !spent {
            // The rewritten delta first, then the held-back text, then the finish_reason (in the caller's chunk).
            if let Some(obj) = choice.as_object_mut() {
                let delta = obj.insert("delta".into(), Value::Object(Map::new()));
                if let Some(Value::Object(delta)) = delta.filter(|d| d.as_object().is_some_and(|d| !d.is_empty())) {
                    before.push(self.delta_chunk(index, delta));
                }
            }
            for (key, text) in flushed {
                let chunk = self.flushed_chunk(index, key, text);
                before.push(chunk);
            }
        }
        blocked
    }

    fn choice_slot(&mut self, index: u64) -> Option<usize> {
        if let Some(slot) = self.choices.iter().position(|c| c.index == index) {
            return Some(slot);
        }
        let factory = self.factory.as_ref()?;
        self.choices.push(ChoiceState {
            index,
            filter: factory(),
            args: Vec::new(),
            finished: false,
        });
        Some(self.choices.len() - 1)
    }

    /// End of stream: finish every filter still open, sending what it releases.
    fn flush_filters(&mut self, out: &mut Vec<u8>) {
        for slot in 0..self.choices.len() {
            let mut flushed = Vec::new();
            let mut findings = Vec::new();
            let state = &mut self.choices[slot];
            if state.finished {
                continue;
            }
            state.finished = true;
            let index = state.index;
            let blocked = state.finish_all(&mut flushed, &mut findings);
            self.findings.extend(findings);
            for (key, text) in flushed {
                let chunk = self.flushed_chunk(index, key, text);
                write_json_frame(out, &chunk);
            }
            if blocked {
                self.block(index, out);
                return;
            }
        }
    }

    fn block(&mut self, index: u64, out: &mut Vec<u8>) {
        let mut choice = Map::new();
        choice.insert("index".into(), Value::from(index));
        choice.insert("delta".into(), Value::Object(Map::new()));
        choice.insert("finish_reason".into(), Value::from("content_filter"));
        write_json_frame(out, &self.chunk_with(choice));
        out.extend_from_slice(DONE_FRAME);
        self.finish_reason = Some("content_filter".to_owned());
        self.blocked = true;
        self.done = true;
    }

    /// The chunk that carries text a filter released: content (counted) or a tool call's arguments.
    fn flushed_chunk(&mut self, index: u64, key: Flushed, text: String) -> Value {
        match key {
            Flushed::Content => {
                self.content_chars += text.chars().count() as u64;
                self.content_chunk(index, text)
            }
            Flushed::Args(key) => self.args_chunk(index, key, text),
        }
    }

    fn content_chunk(&self, index: u64, text: String) -> Value {
        let mut delta = Map::new();
        delta.insert("content".into(), Value::String(text));
        self.delta_chunk(index, delta)
    }

    /// Released tool-call (`Some(index)`) or legacy `function_call` (`None`) arguments.
    fn args_chunk(&self, index: u64, key: Option<u64>, text: String) -> Value {
        let mut function = Map::new();
        function.insert("arguments".into(), Value::String(text));
        let mut delta = Map::new();
        match key {
            Some(call) => {
                let mut entry = Map::new();
                entry.insert("index".into(), Value::from(call));
                entry.insert("function".into(), Value::Object(function));
                delta.insert("tool_calls".into(), Value::Array(vec![Value::Object(entry)]));
            }
            None => {
                delta.insert("function_call".into(), Value::Object(function));
            }
        }
        self.delta_chunk(index, delta)
    }

    fn delta_chunk(&self, index: u64, delta: Map<String, Value>) -> Value {
        let mut choice = Map::new();
        choice.insert("index".into(), Value::from(index));
        choice.insert("delta".into(), Value::Object(delta));
        choice.insert("finish_reason".into(), Value::Null);
        self.chunk_with(choice)
    }

    fn chunk_with(&self, choice: Map<String, Value>) -> Value {
        let mut chunk = self.template.clone().unwrap_or_default();
        chunk
            .entry("object")
            .or_insert_with(|| Value::from("chat.completion.chunk"));
        chunk.insert("choices".into(), Value::Array(vec![Value::Object(choice)]));
        Value::Object(chunk)
    }
}

/// Appends a filter's released text and findings; returns its `blocked` flag.
fn absorb(output: FilterOutput, released: &mut String, findings: &mut Vec<FindingNote>) -> bool {
    released.push_str(&output.text);
    findings.extend(output.findings);
    output.blocked
}

/// A tool-call delta left with nothing but its index and empty arguments.
fn tool_call_is_empty(call: &Value) -> bool {
    let Some(obj) = call.as_object() else {
        return false;
    };
    obj.iter().all(|(key, value)| match (key.as_str(), value) {
        ("index", _) => true,
        ("function", f) => function_is_empty(f),
        _ => false,
    })
}

/// A `function` / `function_call` object whose only field is empty arguments.
fn function_is_empty(function: &Value) -> bool {
    function.as_object().is_some_and(|obj| {
        obj.iter()
            .all(|(key, value)| key == "arguments" && value.as_str().is_some_and(str::is_empty))
    })
}

/// A choice with nothing to say: no delta content or fields, no finish reason, no logprobs.
fn choice_is_empty(choice: &Value) -> bool {
    let Some(obj) = choice.as_object() else {
        return false;
    };
    obj.iter().all(|(key, value)| match (key.as_str(), value) {
        ("index", _) => true,
        (_, Value::Null) => true,
        ("delta", Value::Object(delta)) => delta.is_empty(),
        _ => false,
    })
}

fn write_json_frame(out: &mut Vec<u8>, value: &Value) {
    out.extend_from_slice(b"data: ");
    // Writing a `Value` into a Vec cannot fail: its keys are strings and there is no I/O.
    let _ = serde_json::to_writer(&mut *out, value);
    out.extend_from_slice(b"\n\n");
}

/// A frame as it arrived; a multi-line payload keeps one `data:` line per line.
fn write_raw_frame(out: &mut Vec<u8>, data: &[u8]) {
    if memchr::memchr(b'\n', data).is_none() {
        out.reserve(data.len() + 8);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\n\n");
        return;
    }
    for line in data.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// The byte span of the string `choices[0].delta.content` of a chunk (valid JSON) whose `choices` holds exactly
/// one element.
fn content_span(json: &[u8]) -> Option<(usize, usize)> {
    let (start, end) = top_level_value_span(json, b"choices")?;
    if json.get(start) != Some(&b'[') {
        return None;
    }
    let first = skip_ws(json, start + 1);
    let first_end = skip_value(json, first)?;
    if skip_ws(json, first_end) + 1 != end {
        return None;
    }
    let (delta, _) = object_value_span(json, first, b"delta")?;
    let (s, e) = object_value_span(json, delta, b"content")?;
    (json.get(s) == Some(&b'"')).then_some((s, e))
}

/// The byte span of the value of `key` in the top-level object of `json` (valid JSON), without building a tree.
///
/// Keys are compared as raw bytes, so a key spelled with escapes is not recognised; that only means the value is
/// left as it is.
fn top_level_value_span(json: &[u8], key: &[u8]) -> Option<(usize, usize)> {
    object_value_span(json, skip_ws(json, 0), key)
}

/// Like [`top_level_value_span`] for the object starting at `json[i]`.
fn object_value_span(json: &[u8], mut i: usize, key: &[u8]) -> Option<(usize, usize)> {
    if json.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(json, i);
        if json.get(i) != Some(&b'"') {
            return None; // `}` of an empty object, or not an object
        }
        let key_end = skip_string(json, i)?;
        let name = &json[i + 1..key_end - 1];
        i = skip_ws(json, key_end);
        if json.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(json, i + 1);
        let end = skip_value(json, start)?;
        if name == key {
            return Some((start, end));
        }
        i = skip_ws(json, end);
        match json.get(i) {
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

fn skip_ws(json: &[u8], mut i: usize) -> usize {
    while matches!(json.get(i), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        i += 1;
    }
    i
}

/// `json[i]` is the opening quote; returns the index just past the closing one.
fn skip_string(json: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        let pos = i + memchr::memchr2(b'"', b'\\', json.get(i..)?)?;
        if json[pos] == b'"' {
            return Some(pos + 1);
        }
        i = pos + 2; // skip the escaped byte
    }
}

/// Returns the index just past the value starting at `json[i]`.
fn skip_value(json: &[u8], mut i: usize) -> Option<usize> {
    match json.get(i)? {
        b'"' => skip_string(json, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            loop {
                match json.get(i)? {
                    b'"' => {
                        i = skip_string(json, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            while !matches!(
                json.get(i),
                None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n')
            ) {
                i += 1;
            }
            Some(i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::Event;
    use proptest::prelude::*;

    struct Upper;
    impl TextFilter for Upper {
        fn push(&mut self, text: &str) -> FilterOutput {
            FilterOutput {
                text: text.to_uppercase(),
                ..FilterOutput::default()
            }
        }
        fn finish(&mut self) -> FilterOutput {
            FilterOutput::default()
        }
    }

    #[derive(Default)]
    struct HoldAll(String);
    impl TextFilter for HoldAll {
        fn push(&mut self, text: &str) -> FilterOutput {
            self.0.push_str(text);
            FilterOutput::default()
        }
        fn finish(&mut self) -> FilterOutput {
            FilterOutput {
                text: std::mem::take(&mut self.0),
                ..FilterOutput::default()
            }
        }
    }

    /// Blocks on "secret" (even split across pushes), releasing everything before it.
    #[derive(Default)]
    struct BlockWord(String);
    impl TextFilter for BlockWord {
        fn push(&mut self, text: &str) -> FilterOutput {
            self.0.push_str(text);
            if let Some(at) = self.0.find("secret") {
                let before = self.0[..at].to_owned();
                self.0.clear();
                let note = FindingNote {
                    rule_id: "w".into(),
                    entity: "WORD".into(),
                    action: "block",
                    value_hmac: None,
                };
                return FilterOutput {
                    text: before,
                    blocked: true,
                    findings: vec![note],
                };
            }
            // Hold back a tail that could start the word.
            let keep = (1..6)
                .rev()
                .find(|&n| n <= self.0.len() && "secret".starts_with(&self.0[self.0.len() - n..]));
            let cut = self.0.len() - keep.unwrap_or(0);
            let text = self.0[..cut].to_owned();
            self.0.drain(..cut);
            FilterOutput {
                text,
                ..FilterOutput::default()
            }
        }
        fn finish(&mut self) -> FilterOutput {
            FilterOutput {
                text: std::mem::take(&mut self.0),
                ..FilterOutput::default()
            }
        }
    }

    fn chunk(content: Option<&str>, finish: Option<&str>) -> String {
        let mut delta = Map::new();
        if let Some(c) = content {
            delta.insert("content".into(), Value::from(c));
        }
        let choice = serde_json::json!({"index": 0, "delta": delta, "finish_reason": finish});
        serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1712345678,
            "model": "gpt-4o-2024-08-06", "choices": [choice]})
        .to_string()
    }

    fn stream(contents: &[&str]) -> Vec<u8> {
        let mut s = String::new();
        s.push_str(&format!(
            "data: {}\n\n",
            serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1712345678,
                "model": "gpt-4o-2024-08-06",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})
        ));
        for c in contents {
            s.push_str(&format!("data: {}\n\n", chunk(Some(c), None)));
        }
        s.push_str(": keep-alive\n\n");
        s.push_str(&format!("data: {}\n\n", chunk(None, Some("stop"))));
        s.push_str(
            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1712345678,\
             \"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7,\"total_tokens\":18}}\n\n",
        );
        s.push_str("data: [DONE]\n\n");
        s.into_bytes()
    }

    fn run(relay: &mut ChunkRelay, input: &[u8], sizes: &[usize]) -> (Vec<u8>, Vec<FindingNote>) {
        let mut out = Vec::new();
        let mut findings = Vec::new();
        for piece in crate::sse::chunked(input, sizes) {
            match relay.feed(piece) {
                Ok(o) => {
                    out.extend(o.bytes);
                    findings.extend(o.findings);
                }
                Err(e) => return (format!("error: {e}").into_bytes(), findings),
            }
        }
        let o = relay.finish();
        out.extend(o.bytes);
        findings.extend(o.findings);
        (out, findings)
    }

    fn events(bytes: &[u8]) -> Vec<Event> {
        let mut p = SseParser::default();
        let mut ev = p.feed(bytes).unwrap_or_default();
        ev.extend(p.finish());
        ev
    }

    /// The content text of every chunk, in order, and the finish reasons seen.
    fn contents(bytes: &[u8]) -> (String, Vec<String>, bool) {
        let mut text = String::new();
        let mut reasons = Vec::new();
        let mut done = false;
        for e in events(bytes) {
            if e.data == "[DONE]" {
                done = true;
                continue;
            }
            let v: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
            for c in v["choices"].as_array().into_iter().flatten() {
                if let Some(t) = c["delta"]["content"].as_str() {
                    text.push_str(t);
                }
                if let Some(r) = c["finish_reason"].as_str() {
                    reasons.push(r.to_owned());
                }
            }
        }
        (text, reasons, done)
    }

    fn factory<F: TextFilter + Default + 'static>() -> Option<FilterFactory> {
        Some(Box::new(|| Box::new(F::default()) as Box<dyn TextFilter>))
    }

    impl Default for Upper {
        fn default() -> Self {
            Upper
        }
    }

    #[test]
    fn passthrough_is_byte_identical_and_records_state() {
        let input = stream(&["Hello", ", wor", "ld ✓"]);
        let mut relay = ChunkRelay::new(None, None, SseLimits::default());
        let (out, _) = run(&mut relay, &input, &[7]);
        let without_comment = String::from_utf8_lossy(&input).replace(": keep-alive\n\n", "");
        assert_eq!(String::from_utf8_lossy(&out), without_comment);
        assert!(relay.done());
        assert_eq!(relay.usage(), Some((11, 7)));
        assert_eq!(relay.finish_reason(), Some("stop"));
        assert_eq!(relay.content_chars(), 14);
        assert!(!relay.blocked());
        assert_eq!(relay.error(), None);
    }

    #[test]
    fn model_is_rewritten_and_id_created_kept() {
        let input = stream(&["Hi"]);
        let mut relay = ChunkRelay::new(Some("house-model".into()), None, SseLimits::default());
        let (out, _) = run(&mut relay, &input, &[4096]);
        let evs = events(&out);
        assert_eq!(evs.len(), 5);
        for e in &evs[..4] {
            let v: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
            assert_eq!(v["model"], "house-model");
            assert_eq!(v["id"], "chatcmpl-1");
            assert_eq!(v["created"], 1712345678);
        }
        assert_eq!(contents(&out), ("Hi".into(), vec!["stop".into()], true));
        assert_eq!(relay.usage(), Some((11, 7)));
    }

    #[test]
    fn uppercase_filter_rewrites_content() {
        let input = stream(&["Hello", ", world"]);
        let mut relay = ChunkRelay::new(None, factory::<Upper>(), SseLimits::default());
        let (out, _) = run(&mut relay, &input, &[3]);
        assert_eq!(contents(&out), ("HELLO, WORLD".into(), vec!["stop".into()], true));
        // The role chunk keeps its role, without the empty content.
        let first: Value = serde_json::from_str(&events(&out)[0].data).unwrap_or(Value::Null);
        assert_eq!(first["choices"][0]["delta"], serde_json::json!({"role": "assistant"}));
        assert_eq!(relay.content_chars(), 12);
    }

    #[test]
    fn hold_all_filter_releases_before_finish_reason() {
        let input = stream(&["a", "b", "c"]);
        let mut relay = ChunkRelay::new(None, factory::<HoldAll>(), SseLimits::default());
        let (out, _) = run(&mut relay, &input, &[1]);
        let evs = events(&out);
        // role chunk, released text, finish chunk, usage chunk, [DONE]: the content-only chunks were dropped.
        assert_eq!(evs.len(), 5, "{evs:?}");
        let released: Value = serde_json::from_str(&evs[1].data).unwrap_or(Value::Null);
        assert_eq!(released["choices"][0]["delta"]["content"], "abc");
        assert_eq!(released["id"], "chatcmpl-1");
        let fin: Value = serde_json::from_str(&evs[2].data).unwrap_or(Value::Null);
        assert_eq!(fin["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn held_text_is_flushed_before_done_without_finish_reason() {
        let input = format!(
            "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
            chunk(Some("x"), None),
            chunk(Some("y"), None)
        );
        let mut relay = ChunkRelay::new(None, factory::<HoldAll>(), SseLimits::default());
        let (out, _) = run(&mut relay, input.as_bytes(), &[5]);
        assert_eq!(contents(&out), ("xy".into(), vec![], true));
        assert!(out.ends_with(DONE_FRAME));
    }

    #[test]
    fn finish_flushes_without_inventing_done() {
        let input = format!("data: {}\n\ndata: {}", chunk(Some("x"), None), chunk(Some("y"), None));
        let mut relay = ChunkRelay::new(None, factory::<HoldAll>(), SseLimits::default());
        let (out, _) = run(&mut relay, input.as_bytes(), &[4096]);
        assert_eq!(contents(&out), ("xy".into(), vec![], false));
        assert!(!relay.done());
    }

    #[test]
    fn blocking_filter_stops_the_stream() {
        let input = stream(&["this is sec", "ret stuff", "more"]);
        let mut relay = ChunkRelay::new(None, factory::<BlockWord>(), SseLimits::default());
        let (out, findings) = run(&mut relay, &input, &[2]);
        assert_eq!(contents(&out), ("this is ".into(), vec!["content_filter".into()], true));
        assert!(relay.blocked() && relay.done());
        assert_eq!(relay.finish_reason(), Some("content_filter"));
        assert_eq!(findings.len(), 1);
        assert_eq!(relay.usage(), None, "the rest of the upstream is ignored");
        assert!(out.ends_with(DONE_FRAME));
    }

    #[test]
    fn upstream_error_and_non_json_pass_through() {
        let input = b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\ndata: not json\n\n";
        for model in [None, Some("m".to_owned())] {
            let mut relay = ChunkRelay::new(model, None, SseLimits::default());
            let (out, _) = run(&mut relay, input, &[4096]);
            assert_eq!(out, input.to_vec());
            assert_eq!(
                relay.error(),
                Some("{\"message\":\"overloaded\",\"type\":\"server_error\"}")
            );
        }
    }

    #[test]
    fn multiple_choices_get_their_own_filters() {
        let c = |i: u64, t: &str| {
            serde_json::json!({"id": "x", "created": 1, "model": "m",
                "choices": [{"index": i, "delta": {"content": t}, "finish_reason": null}]})
        };
        let input = format!(
            "data: {}\n\ndata: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
            c(0, "a"),
            c(1, "b"),
            c(0, "c")
        );
        let mut relay = ChunkRelay::new(None, factory::<HoldAll>(), SseLimits::default());
        let (out, _) = run(&mut relay, input.as_bytes(), &[4096]);
        let evs = events(&out);
        assert_eq!(evs.len(), 3);
        let first: Value = serde_json::from_str(&evs[0].data).unwrap_or(Value::Null);
        assert_eq!(
            first["choices"][0],
            serde_json::json!({"index": 0, "delta": {"content": "ac"}, "finish_reason": null})
        );
    }

    #[test]
    fn a_frame_cut_in_half_at_eof_is_dropped() {
        let whole = format!("data: {}\n\n", chunk(Some("x"), None));
        let input = format!("{whole}data: {}", &chunk(Some("y"), None)[..20]);
        for model in [None, Some("m".to_owned())] {
            let mut relay = ChunkRelay::new(model.clone(), None, SseLimits::default());
            let (out, _) = run(&mut relay, input.as_bytes(), &[4096]);
            assert_eq!(events(&out).len(), 1);
            // A complete last frame without its blank line is still relayed.
            let mut relay = ChunkRelay::new(model, None, SseLimits::default());
            let (out, _) = run(&mut relay, whole.trim_end().as_bytes(), &[4096]);
            assert_eq!(contents(&out).0, "x");
        }
    }

    #[test]
    fn model_span_scanner() {
        let doc = br#" { "a" : {"model": "x", "s": "}\"{"}, "b":[1,{"c":"]"}] , "model" : "gpt-4o" , "n": -1.5e3 }"#;
        let (s, e) = top_level_value_span(doc, b"model").unwrap_or((0, 0));
        assert_eq!(&doc[s..e], br#""gpt-4o""#);
        let (s, e) = top_level_value_span(doc, b"n").unwrap_or((0, 0));
        assert_eq!(&doc[s..e], b"-1.5e3");
        assert_eq!(top_level_value_span(doc, b"zzz"), None);
        assert_eq!(top_level_value_span(b"[1]", b"model"), None);
        assert_eq!(top_level_value_span(b"{}", b"model"), None);
    }

    #[test]
    fn model_rewrite_keeps_key_order_and_other_bytes() {
        let input = b"data: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[]}\n\n";
        let mut relay = ChunkRelay::new(Some("pub\"lic".into()), None, SseLimits::default());
        let (out, _) = run(&mut relay, input, &[4096]);
        assert_eq!(
            out,
            b"data: {\"id\":\"c\",\"model\":\"pub\\\"lic\",\"choices\":[]}\n\n".to_vec()
        );
    }

    proptest! {
        #[test]
        fn span_scanner_never_panics(data in proptest::collection::vec(prop_oneof![Just(b'{'), Just(b'}'), Just(b'"'),
            Just(b'\\'), Just(b':'), Just(b','), Just(b'['), Just(b']'), any::<u8>()], 0..64)) {
            let _ = top_level_value_span(&data, b"model");
        }
    }

    #[test]
    fn caps_surface_as_errors() {
        let limits = SseLimits {
            max_line_bytes: 16,
            ..SseLimits::default()
        };
        let mut relay = ChunkRelay::new(None, None, limits);
        assert_eq!(
            relay.feed(b"data: 0123456789abcdef"),
            Err(RelayError::Sse(SseError::LineTooLong { limit: 16 }))
        );
    }

    fn tool_chunk(choice: u64, calls: Value, finish: Option<&str>) -> String {
        serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1712345678,
            "model": "gpt-4o", "choices": [{"index": choice, "delta": calls, "finish_reason": finish}]})
        .to_string()
    }

    /// A tool-call stream: call 0's arguments in `args0` fragments, call 1's in `args1`, interleaved, then a
    /// legacy `function_call` on choice 1, then the finish chunk and `[DONE]`.
    fn tool_stream(args0: &[&str], args1: &[&str]) -> Vec<u8> {
        let mut s = String::new();
        let head = |i: u64, name: &str| {
            serde_json::json!({"tool_calls": [{"index": i, "id": format!("call_{i}"), "type": "function",
                "function": {"name": name, "arguments": ""}}]})
        };
        s.push_str(&format!("data: {}\n\n", tool_chunk(0, head(0, "lookup"), None)));
        s.push_str(&format!("data: {}\n\n", tool_chunk(0, head(1, "store"), None)));
        for k in 0..args0.len().max(args1.len()) {
            for (i, args) in [(0u64, args0), (1, args1)] {
                if let Some(a) = args.get(k) {
                    let delta = serde_json::json!({"tool_calls": [{"index": i, "function": {"arguments": a}}]});
                    s.push_str(&format!("data: {}\n\n", tool_chunk(0, delta, None)));
                }
            }
        }
        for a in args0 {
            let delta = serde_json::json!({"function_call": {"arguments": a}});
            s.push_str(&format!("data: {}\n\n", tool_chunk(1, delta, None)));
        }
        s.push_str(&format!(
            "data: {}\n\n",
            tool_chunk(0, serde_json::json!({}), Some("tool_calls"))
        ));
        s.push_str("data: [DONE]\n\n");
        s.into_bytes()
    }

    type ArgsByCall = std::collections::BTreeMap<(u64, Option<u64>), String>;

    /// Per (choice, tool call index or `None` for `function_call`): the concatenated arguments; plus finish reasons
    /// in order, and whether every frame parsed.
    fn tool_args(bytes: &[u8]) -> (ArgsByCall, Vec<String>, bool) {
        let mut args = std::collections::BTreeMap::new();
        let mut reasons = Vec::new();
        let mut parsed = true;
        for e in events(bytes) {
            if e.data == "[DONE]" {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(&e.data) else {
                parsed = false;
                continue;
            };
            for c in v["choices"].as_array().into_iter().flatten() {
                let ci = c["index"].as_u64().unwrap_or(0);
                for call in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                    let entry: &mut String = args.entry((ci, call["index"].as_u64())).or_default();
                    entry.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
                }
                if let Some(a) = c["delta"]["function_call"]["arguments"].as_str() {
                    args.entry((ci, None)).or_default().push_str(a);
                }
                if let Some(r) = c["finish_reason"].as_str() {
                    reasons.push(r.to_owned());
                }
            }
        }
        (args, reasons, parsed)
    }

    #[test]
    fn tool_call_arguments_go_through_their_own_filters() {
        let input = tool_stream(&["{\"q\": ", "\"abc\"}"], &["{\"x\"", ": 1}"]);
        let mut relay = ChunkRelay::new(None, factory::<Upper>(), SseLimits::default());
        let (out, _) = run(&mut relay, &input, &[13]);
        let (args, reasons, parsed) = tool_args(&out);
        assert!(parsed);
        assert_eq!(args.get(&(0, Some(0))).map(String::as_str), Some("{\"Q\": \"ABC\"}"));
        assert_eq!(args.get(&(0, Some(1))).map(String::as_str), Some("{\"X\": 1}"));
        assert_eq!(args.get(&(1, None)).map(String::as_str), Some("{\"Q\": \"ABC\"}"));
        assert_eq!(reasons, vec!["tool_calls".to_owned()]);
        // The tool call's id and name are kept.
        let first: Value = serde_json::from_str(&events(&out)[0].data).unwrap_or(Value::Null);
        assert_eq!(
            first["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "lookup"
        );
        assert_eq!(first["choices"][0]["delta"]["tool_calls"][0]["id"], "call_0");
        assert_eq!(relay.content_chars(), 0);
    }

    #[test]
    fn held_arguments_are_released_before_the_finish_reason() {
        let input = tool_stream(&["a", "b", "c"], &["x", "y"]);
        let mut relay = ChunkRelay::new(None, factory::<HoldAll>(), SseLimits::default());
        let (out, _) = run(&mut relay, &input, &[7]);
        let (args, reasons, parsed) = tool_args(&out);
        assert!(parsed);
        assert_eq!(args.get(&(0, Some(0))).map(String::as_str), Some("abc"));
        assert_eq!(args.get(&(0, Some(1))).map(String::as_str), Some("xy"));
        assert_eq!(
            args.get(&(1, None)).map(String::as_str),
            Some("abc"),
            "flushed at [DONE]"
        );
        assert_eq!(reasons, vec!["tool_calls".to_owned()]);
        let evs = events(&out);
        // head 0, head 1, released args of call 0, of call 1, the finish chunk, choice 1's function_call, [DONE].
        assert_eq!(evs.len(), 7, "{evs:?}");
        let released: Value = serde_json::from_str(&evs[2].data).unwrap_or(Value::Null);
        assert_eq!(
            released["choices"][0],
            serde_json::json!({"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "abc"}}]},
                "finish_reason": null})
        );
        let fin: Value = serde_json::from_str(&evs[4].data).unwrap_or(Value::Null);
        assert_eq!(fin["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn blocked_arguments_stop_the_stream() {
        let input = tool_stream(&["{\"v\": \"sec", "ret\"}"], &["{}"]);
        let mut relay = ChunkRelay::new(None, factory::<BlockWord>(), SseLimits::default());
        let (out, findings) = run(&mut relay, &input, &[5]);
        let (args, reasons, parsed) = tool_args(&out);
        assert!(parsed && relay.blocked() && relay.done());
        assert_eq!(args.get(&(0, Some(0))).map(String::as_str), Some("{\"v\": \""));
        assert_eq!(reasons, vec!["content_filter".to_owned()]);
        assert_eq!(findings.len(), 1);
        assert!(out.ends_with(DONE_FRAME));
    }

    #[test]
    fn dlp_redacts_a_key_split_anywhere_in_tool_arguments() {
        use crate::dlp::stream::filter_factory;
        use crate::dlp::{Engine, Policy};
        use std::sync::Arc;
        let engine = Arc::new(Engine::new(None, "regex").unwrap_or_else(|e| panic!("{e}")));
        let policy = Arc::new(Policy::default());
        let args = "{\"cmd\": \"export AWS_ACCESS_KEY_ID=AKIAZ3MPLQ7RT2VWX4YB\"}";
        for cut in 1..args.len() {
            let input = tool_stream(&[&args[..cut], &args[cut..]], &[&args[..cut], &args[cut..]]);
            let factory = filter_factory(Arc::clone(&engine), Arc::clone(&policy));
            let mut relay = ChunkRelay::new(Some("pub".into()), Some(factory), SseLimits::default());
            let (out, findings) = run(&mut relay, &input, &[4096]);
            let text = String::from_utf8_lossy(&out);
            assert!(!text.contains("AKIAZ3MPLQ7RT2VWX4YB"), "cut {cut}: {text}");
            let (got, reasons, parsed) = tool_args(&out);
            assert!(parsed, "cut {cut}");
            let want = "{\"cmd\": \"export AWS_ACCESS_KEY_ID=[REDACTED:AWS_ACCESS_KEY]\"}";
            for key in [(0, Some(0)), (0, Some(1)), (1, None)] {
                assert_eq!(got.get(&key).map(String::as_str), Some(want), "cut {cut} {key:?}");
            }
            assert_eq!(reasons, vec!["tool_calls".to_owned()]);
            assert_eq!(findings.len(), 3, "cut {cut}");
        }
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_output(sizes in proptest::collection::vec(1usize..200, 1..16), filter in 0..4u8) {
            let input = stream(&["Hello ", "wor", "ld, this is a sec", "ret", " é🌍"]);
            let make = |f: u8| match f {
                0 => ChunkRelay::new(None, None, SseLimits::default()),
                1 => ChunkRelay::new(Some("pub".into()), factory::<Upper>(), SseLimits::default()),
                2 => ChunkRelay::new(None, factory::<HoldAll>(), SseLimits::default()),
                _ => ChunkRelay::new(None, factory::<BlockWord>(), SseLimits::default()),
            };
            let (whole, _) = run(&mut make(filter), &input, &[input.len()]);
            let (chunked, _) = run(&mut make(filter), &input, &sizes);
            prop_assert_eq!(whole, chunked);
        }
    }
}
