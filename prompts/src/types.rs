//! Conversation types shared by every format: messages, tool specs, tool calls, builtin tools.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who speaks a message.
///
/// Llama 3.1 calls the tool-result role `ipython`; OpenAI calls it `tool`. Both parse to
/// [`Role::Tool`], which each format renders under its own name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the conversation.
    System,
    /// The human.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call (`ipython` in Llama 3.1, `tool` in OpenAI shapes).
    Tool,
}

impl Role {
    /// Parses a role name; `tool` and `ipython` are the same role. `None` for anything else.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" | "ipython" => Some(Role::Tool),
            _ => None,
        }
    }
}

/// A call of one tool: its name and its arguments (a JSON object, in the order given).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, unique in its conversation (OpenAI's `tool_call_id`); the agent assigns
    /// it, the parser leaves it `None` (no format makes the model write one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The tool's name, e.g. `get_weather`, `brave_search`, `math.factorial`.
    pub name: String,
    /// Arguments by name. Always a JSON object for calls the parser produces.
    pub arguments: Value,
}

impl ToolCall {
    /// A call with the given name and arguments.
    pub fn new(name: impl Into<String>, arguments: Value) -> ToolCall {
        ToolCall {
            id: None,
            name: name.into(),
            arguments,
        }
    }
}

/// The content of a tool result: plain text, or a JSON value the tool returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum ToolOutput {
    /// Text, as the tool printed it.
    Text(String),
    /// A structured result (object, array, number, boolean or null).
    Json(Value),
}

/// One message of a conversation. Serialized with its role as the tag (`{"role": "user",
/// "content": …}`), so conversations can be saved and read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Message {
    /// A system message.
    System {
        /// Its text.
        content: String,
    },
    /// A user message.
    User {
        /// Its text.
        content: String,
    },
    /// A model turn: text, tool calls, or both.
    Assistant {
        /// Visible text (formats that cannot show text beside calls drop it when there are calls).
        content: String,
        /// Tool calls, in order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
        /// The exact text the model generated for this turn, stop token included when it produced
        /// one. When present it is rendered verbatim instead of `content`/`tool_calls`, so the
        /// prompt stays byte-identical to what the model saw and its KV cache stays valid.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generated: Option<String>,
    },
    /// The result of a tool call.
    Tool {
        /// What the tool returned.
        content: ToolOutput,
        /// The id of the call this answers, when the call had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
    },
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Message {
        Message::System {
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Message {
        Message::User {
            content: content.into(),
        }
    }

    /// An assistant message with text only.
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::Assistant {
            content: content.into(),
            tool_calls: Vec::new(),
            generated: None,
        }
    }

    /// An assistant message made of tool calls.
    pub fn tool_calls(calls: Vec<ToolCall>) -> Message {
        Message::Assistant {
            content: String::new(),
            tool_calls: calls,
            generated: None,
        }
    }

    /// An assistant turn exactly as the model generated it (stop token included if any).
    pub fn generated(text: impl Into<String>) -> Message {
        Message::Assistant {
            content: String::new(),
            tool_calls: Vec::new(),
            generated: Some(text.into()),
        }
    }

    /// A tool result in plain text.
    pub fn tool_text(content: impl Into<String>) -> Message {
        Message::Tool {
            content: ToolOutput::Text(content.into()),
            call_id: None,
        }
    }

    /// A tool result as a JSON value.
    pub fn tool_json(content: Value) -> Message {
        Message::Tool {
            content: ToolOutput::Json(content),
            call_id: None,
        }
    }

    /// The role of this message.
    pub fn role(&self) -> Role {
        match self {
            Message::System { .. } => Role::System,
            Message::User { .. } => Role::User,
            Message::Assistant { .. } => Role::Assistant,
            Message::Tool { .. } => Role::Tool,
        }
    }
}

/// A custom tool the model may call: name, description and a JSON Schema for its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments object (`{"type": "object", "properties": …}`).
    pub parameters: Value,
}

impl ToolSpec {
    /// A tool spec.
    pub fn new(name: impl Into<String>, description: impl Into<String>, parameters: Value) -> Self {
        ToolSpec {
            name: name.into(),
            description: Some(description.into()),
            parameters,
        }
    }

    /// The OpenAI-shaped description `{"type": "function", "function": {name, description,
    /// parameters}}`, in that key order: what chat templates receive as `tools`.
    pub fn to_openai_json(&self) -> Value {
        let mut function = serde_json::Map::new();
        function.insert("name".into(), Value::String(self.name.clone()));
        if let Some(description) = &self.description {
            function.insert("description".into(), Value::String(description.clone()));
        }
        function.insert("parameters".into(), self.parameters.clone());
        let mut tool = serde_json::Map::new();
        tool.insert("type".into(), Value::String("function".into()));
        tool.insert("function".into(), Value::Object(function));
        Value::Object(tool)
    }

    /// Names of the schema's properties, in declaration order (maps positional arguments).
    pub fn parameter_names(&self) -> Vec<String> {
        self.parameters
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| props.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Llama 3.1's builtin tools, which it calls with `<|python_tag|>name.call(...)` (or raw code for
/// the interpreter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinTool {
    /// Web search: `brave_search.call(query="…")`.
    BraveSearch,
    /// Computation: `wolfram_alpha.call(query="…")`.
    WolframAlpha,
    /// Python code after `<|python_tag|>`, called as `code_interpreter` with `{"code": …}`.
    CodeInterpreter,
}

impl BuiltinTool {
    /// All builtin tools.
    pub const ALL: [BuiltinTool; 3] = [
        BuiltinTool::BraveSearch,
        BuiltinTool::WolframAlpha,
        BuiltinTool::CodeInterpreter,
    ];

    /// The name the model uses.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinTool::BraveSearch => "brave_search",
            BuiltinTool::WolframAlpha => "wolfram_alpha",
            BuiltinTool::CodeInterpreter => "code_interpreter",
        }
    }

    /// The builtin tool with this name, if any.
    pub fn from_name(name: &str) -> Option<BuiltinTool> {
        BuiltinTool::ALL
            .into_iter()
            .find(|tool| tool.name() == name)
    }
}

/// A conversation and the tools offered in it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Conversation {
    /// Messages in order.
    pub messages: Vec<Message>,
    /// Custom tools. `Some(vec![])` differs from `None` in Llama 3.1 (it still announces the
    /// `ipython` environment), as in the official template.
    #[serde(default)]
    pub tools: Option<Vec<ToolSpec>>,
    /// Builtin tools. As with `tools`, `Some(vec![])` is not `None`.
    #[serde(default)]
    pub builtin_tools: Option<Vec<BuiltinTool>>,
}

impl Conversation {
    /// A conversation of these messages, without tools.
    pub fn new(messages: Vec<Message>) -> Conversation {
        Conversation {
            messages,
            tools: None,
            builtin_tools: None,
        }
    }

    /// Adds custom tools.
    pub fn with_tools(mut self, tools: Vec<ToolSpec>) -> Conversation {
        self.tools = Some(tools);
        self
    }

    /// Adds builtin tools.
    pub fn with_builtin_tools(mut self, tools: Vec<BuiltinTool>) -> Conversation {
        self.builtin_tools = Some(tools);
        self
    }

    /// The conversation plus one more message.
    pub fn push(&mut self, message: Message) {
        self.messages.push(message);
    }

    /// This conversation with a custom tool named `code_interpreter` offered as the builtin
    /// interpreter instead (for formats that have one: Llama 3.1 announces it with
    /// `Environment: ipython` and takes raw code after `<|python_tag|>`). The custom list
    /// becomes `None` when nothing else is in it, so no empty function list is rendered.
    pub fn with_builtin_code_interpreter(&self) -> std::borrow::Cow<'_, Conversation> {
        let name = BuiltinTool::CodeInterpreter.name();
        let Some(tools) = &self.tools else {
            return std::borrow::Cow::Borrowed(self);
        };
        if !tools.iter().any(|t| t.name == name) {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut promoted = self.clone();
        let rest: Vec<ToolSpec> = tools.iter().filter(|t| t.name != name).cloned().collect();
        promoted.tools = (!rest.is_empty()).then_some(rest);
        let builtins = promoted.builtin_tools.get_or_insert_with(Vec::new);
        if !builtins.contains(&BuiltinTool::CodeInterpreter) {
            builtins.push(BuiltinTool::CodeInterpreter);
        }
        std::borrow::Cow::Owned(promoted)
    }

    /// The tool set a parser of this conversation's replies should know.
    pub fn tool_set(&self) -> ToolSet {
        ToolSet::new(
            self.tools.as_deref().unwrap_or_default(),
            self.builtin_tools.as_deref().unwrap_or_default(),
        )
    }
}

/// How the model may use tools in its next turn.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// Text or a call, as the model likes (the constraint engages only when a call starts).
    #[default]
    Auto,
    /// No calls: no constraint is built.
    None,
    /// Some call, from the first token.
    Required,
    /// A call of this tool, from the first token.
    Named(String),
}

/// The tools a parser knows: a call naming any other tool is reported as unknown, and text that
/// merely contains JSON is only a call when it names one of these.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolSet {
    tools: Vec<(String, Vec<String>)>,
    builtins: Vec<BuiltinTool>,
    permissive: bool,
}

impl ToolSet {
    /// Knows these custom tools (with their parameter order) and builtin tools.
    pub fn new(tools: &[ToolSpec], builtins: &[BuiltinTool]) -> ToolSet {
        ToolSet {
            tools: tools
                .iter()
                .map(|tool| (tool.name.clone(), tool.parameter_names()))
                .collect(),
            builtins: builtins.to_vec(),
            permissive: false,
        }
    }

    /// Knows no particular tools and accepts any name in an unambiguous call position (the start
    /// of a turn or after `<|python_tag|>`). Mid-text JSON is then never a call.
    pub fn permissive() -> ToolSet {
        ToolSet {
            tools: Vec::new(),
            builtins: BuiltinTool::ALL.to_vec(),
            permissive: true,
        }
    }

    /// Whether this set accepts any name.
    pub fn is_permissive(&self) -> bool {
        self.permissive
    }

    /// Whether `name` is a tool of this set (always true when permissive).
    pub fn knows(&self, name: &str) -> bool {
        self.permissive || self.knows_exactly(name)
    }

    /// Whether `name` is listed in this set (ignores permissiveness).
    pub fn knows_exactly(&self, name: &str) -> bool {
        self.tools.iter().any(|(known, _)| known == name)
            || self.builtins.iter().any(|tool| tool.name() == name)
    }

    /// Whether the code interpreter is available (raw code after `<|python_tag|>` calls it):
    /// the builtin, or a custom tool of its name (offered as the builtin, see
    /// [`Conversation::with_builtin_code_interpreter`]).
    pub fn has_code_interpreter(&self) -> bool {
        self.knows_exactly(BuiltinTool::CodeInterpreter.name())
    }

    /// Parameter names of a tool in schema order (to map positional arguments); builtins take
    /// `query` (searches) or `code` (the interpreter).
    pub fn parameter_names(&self, name: &str) -> Option<Vec<String>> {
        if let Some(builtin) = BuiltinTool::from_name(name) {
            let param = match builtin {
                BuiltinTool::CodeInterpreter => "code",
                _ => "query",
            };
            return Some(vec![param.to_string()]);
        }
        self.tools
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, params)| params.clone())
    }
}
