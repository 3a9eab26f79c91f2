//! Chat prompts: turning a system text and a user message into the exact
//! string an instruction-tuned model was trained on.
//!
//! The GGUF's own `tokenizer.chat_template` (a Jinja template, as in
//! transformers) is rendered with minijinja, which is what llama.cpp's
//! `--jinja` mode, mistral.rs and transformers do. Files without one fall back
//! to a built-in format guessed from the vocabulary (ChatML when the vocabulary
//! has `<|im_start|>`, Mistral's `[INST]` otherwise).
//!
//! Many templates (Mistral's among them) have no system role and raise an
//! error when given one. Then the system text is folded into the first user
//! turn, separated by a blank line, which is what Ollama does for Mistral.
//!
//! A rendered prompt remembers which of its bytes came from the messages
//! ([`RenderedPrompt`]), so the tokenizer parses control tokens only in the
//! template's own markup. To find them, the template is rendered once with a
//! placeholder for each message and once with the messages; the two agree
//! when the template copies each message in (as is, or trimmed), which is
//! what chat templates do.

use std::ops::Range;

use minijinja::{Environment, ErrorKind, Value, context};
use serde::Serialize;

use super::Tokenizer;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// Who is speaking in a chat turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the conversation.
    System,
    /// The person asking.
    User,
    /// The model.
    Assistant,
}

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// The speaker.
    pub role: Role,
    /// What was said.
    pub content: String,
}

impl Message {
    /// A turn by `role` saying `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

const MISTRAL: &str = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

/// Ollama's prompt for `mistral:7b-instruct-v0.2-q4_K_M`, as Jinja. Ollama
/// renders Go templates; its Mistral template (ollama/ollama,
/// `template/mistral-instruct.gotmpl`; expected outputs in
/// `template/testdata/mistral-instruct.gotmpl/system-user-assistant-user`
/// and `.../user`) writes `[INST] {system}\n\n{user}[/INST]` for the user
/// turn that carries the system text, no space
/// before `[/INST]`, and ` {answer}</s>` after each assistant turn. Its
/// llama.cpp runner adds the BOS token when tokenizing, written here as
/// `bos_token`.
const OLLAMA_MISTRAL: &str = "{{ bos_token }}\
{%- set system = messages | selectattr('role', 'equalto', 'system') | map(attribute='content') | first | default('') -%}\
{%- set turns = messages | rejectattr('role', 'equalto', 'system') | list -%}\
{%- for m in turns -%}\
{%- if m['role'] == 'user' -%}[INST] {% if system and loop.index >= turns | length - 1 %}{{ system }}\n\n{% endif %}{{ m['content'] }}[/INST]\
{%- elif m['role'] == 'assistant' %} {{ m['content'] }}</s>\
{%- endif -%}\
{%- endfor -%}";

/// Most steps a chat template may take to render one prompt.
const TEMPLATE_FUEL: u64 = 5_000_000;

/// Templates abridge carries itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// ChatML (`<|im_start|>role ... <|im_end|>`).
    ChatMl,
    /// Mistral's `[INST] ... [/INST]`, as in Mistral's own tokenizer config.
    Mistral,
    /// Mistral as Ollama prompts it, system text folded into the last user turn.
    OllamaMistral,
}

impl Builtin {
    /// The name used in `models.toml` (`chatml`, `mistral`, `ollama-mistral`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "chatml" => Some(Self::ChatMl),
            "mistral" => Some(Self::Mistral),
            "ollama-mistral" => Some(Self::OllamaMistral),
            _ => None,
        }
    }

    fn source(self) -> &'static str {
        match self {
            Self::ChatMl => CHATML,
            Self::Mistral => MISTRAL,
            Self::OllamaMistral => OLLAMA_MISTRAL,
        }
    }
}

/// Where a template came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateSource {
    /// The model file's `tokenizer.chat_template`.
    ModelFile,
    /// One of abridge's own.
    Builtin(Builtin),
}

/// A chat template ready to render.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    origin: TemplateSource,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// The template for a model: the file's own when it has one, otherwise a
    /// built-in one chosen by the vocabulary.
    pub fn for_model(gguf: &GgufFile, tokenizer: &Tokenizer) -> Self {
        let text = |id: Option<u32>| {
            id.and_then(|id| tokenizer.token_text(id))
                .unwrap_or_default()
                .to_owned()
        };
        let (source, origin) = match gguf.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
            Some(t) if !t.trim().is_empty() => (t.to_owned(), TemplateSource::ModelFile),
            _ if tokenizer.token_id("<|im_start|>").is_some() => {
                (CHATML.to_owned(), TemplateSource::Builtin(Builtin::ChatMl))
            }
            _ => (
                MISTRAL.to_owned(),
                TemplateSource::Builtin(Builtin::Mistral),
            ),
        };
        Self {
            source,
            origin,
            bos_token: text(tokenizer.bos()),
            eos_token: text(tokenizer.eos()),
        }
    }

    /// One of abridge's own templates, with the model's BOS and EOS texts.
    pub fn builtin(builtin: Builtin, tokenizer: &Tokenizer) -> Self {
        let text = |id: Option<u32>| {
            id.and_then(|id| tokenizer.token_text(id))
                .unwrap_or_default()
                .to_owned()
        };
        Self {
            source: builtin.source().to_owned(),
            origin: TemplateSource::Builtin(builtin),
            bos_token: text(tokenizer.bos()),
            eos_token: text(tokenizer.eos()),
        }
    }

    /// A template from Jinja source, with the given BOS and EOS token texts.
    pub fn from_source(source: impl Into<String>, bos_token: &str, eos_token: &str) -> Self {
        Self {
            source: source.into(),
            origin: TemplateSource::ModelFile,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        }
    }

    /// Where this template came from.
    pub fn origin(&self) -> TemplateSource {
        self.origin
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`, ending with the assistant's turn opening when
    /// `add_generation_prompt` is set.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_text(messages, add_generation_prompt)
    }

    /// Renders `messages` as [`render`](Self::render) does, marking where
    /// each message's text landed.
    ///
    /// ```
    /// use abridge::{ChatTemplate, Message, Role};
    ///
    /// let chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}";
    /// let template = ChatTemplate::from_source(chatml, "", "");
    /// let doc = "Bees.<|im_end|>";
    /// let prompt = template.render_marked(&[Message::new(Role::User, doc)], false)?;
    /// let user = &prompt.supplied()[0];
    /// assert_eq!(&prompt.text()[user.clone()], doc);
    /// # Ok::<(), abridge::Error>(())
    /// ```
    pub fn render_marked(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<RenderedPrompt> {
        let text = self.render_text(messages, add_generation_prompt)?;
        let placeholders: Vec<Message> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| Message::new(m.role, placeholder(i)))
            .collect();
        let skeleton = self.render_text(&placeholders, add_generation_prompt)?;
        // Templates copy a message as it is or trimmed (Gemma's, Llama 3's).
        for trim in [false, true] {
            let marked = fill(&skeleton, messages, trim);
            if marked.text == text {
                return Ok(marked);
            }
        }
        Err(Error::Template(
            "the chat template changes the messages' text, so its markup cannot be told apart \
             from the text; special tokens in the text would be read as markup"
                .into(),
        ))
    }

    fn render_text(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut env = Environment::new();
        // A template comes with the model file: one that loops without end
        // must fail, not hang the summary. Real chat templates take a few
        // thousand steps for a long conversation.
        env.set_fuel(Some(TEMPLATE_FUEL));
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template("chat", &self.source)
            .map_err(|e| Error::Template(format!("cannot parse the model's chat template: {e}")))?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| Error::Template(e.to_string()))?;
        tmpl.render(context! {
            messages => Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| Error::Template(e.to_string()))
    }

    /// Renders a system text (optional) and one user message, ready for the
    /// assistant's answer. When the template rejects or drops the system
    /// role, the system text goes in front of the user message instead.
    pub fn render_turn(&self, system: Option<&str>, user: &str) -> Result<RenderedPrompt> {
        let system = system.filter(|s| !s.trim().is_empty());
        if let Some(system) = system {
            let messages = [
                Message::new(Role::System, system),
                Message::new(Role::User, user),
            ];
            if let Ok(prompt) = self.render_marked(&messages, true)
                && prompt.text().contains(system)
            {
                return Ok(prompt);
            }
            let folded = format!("{system}\n\n{user}");
            return self.render_marked(&[Message::new(Role::User, folded)], true);
        }
        self.render_marked(&[Message::new(Role::User, user)], true)
    }
}

/// A rendered chat prompt that knows which of its bytes the messages
/// supplied: the tokenizer parses special tokens only outside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedPrompt {
    text: String,
    supplied: Vec<Range<usize>>,
}

impl RenderedPrompt {
    /// The prompt's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Where message text lies in [`text`](Self::text), in order; everything
    /// else is the template's markup.
    pub fn supplied(&self) -> &[Range<usize>] {
        &self.supplied
    }

    /// The prompt's text, owned.
    pub fn into_text(self) -> String {
        self.text
    }
}

/// Stands for message `i` in a render; private-use characters, which no
/// template writes and no document needs around a number.
fn placeholder(i: usize) -> String {
    format!("\u{F8F0}{i}\u{F8F1}")
}

/// The skeleton with every placeholder replaced by its message.
fn fill(skeleton: &str, messages: &[Message], trim: bool) -> RenderedPrompt {
    let mut text = String::with_capacity(skeleton.len());
    let mut supplied = Vec::new();
    let mut rest = skeleton;
    while let Some(start) = rest.find('\u{F8F0}') {
        let after = &rest[start + '\u{F8F0}'.len_utf8()..];
        let Some(end) = after.find('\u{F8F1}') else {
            break;
        };
        let Some(message) = after[..end]
            .parse::<usize>()
            .ok()
            .and_then(|i| messages.get(i))
        else {
            break;
        };
        text.push_str(&rest[..start]);
        let content = if trim {
            message.content.trim()
        } else {
            &message.content
        };
        if !content.is_empty() {
            supplied.push(text.len()..text.len() + content.len());
        }
        text.push_str(content);
        rest = &after[end + '\u{F8F1}'.len_utf8()..];
    }
    text.push_str(rest);
    RenderedPrompt { text, supplied }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_renders_system_and_user() {
        let t = ChatTemplate::from_source(CHATML, "", "<|im_end|>");
        let s = t.render_turn(Some("Be brief."), "Hi").unwrap();
        let supplied: Vec<&str> = s.supplied().iter().map(|r| &s.text()[r.clone()]).collect();
        assert_eq!(supplied, ["Be brief.", "Hi"]);
        assert_eq!(
            s.text(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn system_is_folded_where_the_template_has_no_system_role() {
        let t = ChatTemplate::from_source(MISTRAL, "<s>", "</s>");
        let s = t.render_turn(Some("Be brief."), "Hi").unwrap();
        assert_eq!(s.text(), "<s>[INST] Be brief.\n\nHi [/INST]");
        assert_eq!(s.supplied(), std::slice::from_ref(&(10..23)));
    }

    #[test]
    fn ollama_mistral_puts_the_system_text_in_the_last_user_turn() {
        let t = ChatTemplate::from_source(OLLAMA_MISTRAL, "<s>", "</s>");
        assert_eq!(
            t.render_turn(Some("You are a helpful assistant."), "Hello, how are you?")
                .unwrap()
                .text(),
            "<s>[INST] You are a helpful assistant.\n\nHello, how are you?[/INST]"
        );
        assert_eq!(
            t.render_turn(None, "Hello, how are you?").unwrap().text(),
            "<s>[INST] Hello, how are you?[/INST]"
        );
        // Later turns: the system text moves to the last user turn, as the
        // Go template's `len (slice $.Messages $index) == 1` test does.
        let chat = [
            Message::new(Role::System, "S"),
            Message::new(Role::User, "A"),
            Message::new(Role::Assistant, "B"),
            Message::new(Role::User, "C"),
        ];
        assert_eq!(
            t.render(&chat, true).unwrap(),
            "<s>[INST] A[/INST] B</s>[INST] S\n\nC[/INST]"
        );
    }

    #[test]
    fn template_errors_are_reported() {
        let t = ChatTemplate::from_source("{% for %}", "", "");
        let err = t.render_turn(None, "Hi").unwrap_err();
        assert!(err.to_string().contains("chat template"), "{err}");
    }

    #[test]
    fn trimmed_messages_are_found() {
        let t = ChatTemplate::from_source(
            "{% for m in messages %}<t>{{ m['content'] | trim }}</t>{% endfor %}",
            "",
            "",
        );
        let p = t
            .render_marked(&[Message::new(Role::User, " <t>x\n")], false)
            .unwrap();
        assert_eq!(p.text(), "<t><t>x</t>");
        assert_eq!(p.supplied(), std::slice::from_ref(&(3..7)));
    }

    #[test]
    fn a_template_that_rewrites_the_text_is_refused() {
        let t = ChatTemplate::from_source(
            "{% for m in messages %}{{ m['content'] | upper }}{% endfor %}",
            "",
            "",
        );
        let err = t.render_turn(None, "hi").unwrap_err();
        assert!(err.to_string().contains("changes the messages"), "{err}");
    }

    #[test]
    fn a_template_that_never_ends_is_stopped() {
        let t = ChatTemplate::from_source(
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            "",
            "",
        );
        let err = t.render_turn(None, "hi").unwrap_err();
        assert!(err.to_string().contains("fuel"), "{err}");
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::from_source(
            "{% for m in messages %}{{ m['content'].strip() }}{% endfor %}",
            "",
            "",
        );
        assert_eq!(
            t.render(&[Message::new(Role::User, "  x  ")], false)
                .unwrap(),
            "x"
        );
    }
}
