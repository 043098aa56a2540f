//! The built-in injection rules: what each one looks for, written against normalised text (lower
//! case, entities and percent-encoding decoded, whitespace runs as one space).
//!
//! Precision comes from asking for the attack's form, not its words. Script rules need an
//! executable sink with an attacker's payload (an `on…=` handler of any name whose code probes or
//! exfiltrates, a `javascript:` URL that runs something), so the honest HTML developers paste
//! (`onclick="return confirm('Delete?')"`, `href="javascript:void(0)"`) passes. Code rules need a
//! harmful payload (a reverse shell, decode-and-run, a template-injection gadget chain), so code
//! questions about `eval` or `os.system` pass. Prompt rules need an instruction addressed to the
//! model; [`Pattern::Addressed`] ones are also dropped when the match is only mentioned: quoted
//! whole, or named after a discussion frame ("attacks like …", "translate to German: …").

use super::rules::{CODE_INJECTION, PROMPT_INJECTION, Pattern, SCRIPT_INJECTION};

/// Word boundary that stays in the fast DFA engines even around non-ASCII text.
const B: &str = r"(?-u:\b)";

/// Verbs that drop earlier instructions.
const OVERRIDE_VERBS: &str = r"ignore|disregard|forget|override|overwrite|bypass|discard|abandon|drop|skip|neglect|set aside|put aside|overlook|dismiss|scrap|unlearn|pay no (attention|heed|mind) to|stop (following|obeying)|no longer (follow|obey)|(do not|don't|never) (follow|obey|adhere to|comply with)";

/// What is dropped.
const OVERRIDE_OBJECTS: &str = r"instructions?|directions?|directives?|commands?|guidance|guidelines|rules|prompts?|programming|system (message|prompt)|restrictions|constraints|guardrails|policies|training|conditioning|context|inputs?|messages?|requests?|text|everything|limitations|filters|safeguards";

/// Words placing the dropped text before this one, or making it the model's.
const EARLIER: &str = r"all|any|every|previous|prior|above|earlier|preceding|foregoing|initial|original|system|your|former|old|past|aforementioned|above-mentioned";

/// Verbs that ask for the hidden prompt.
const LEAK_VERBS: &str = r"reveal|print|show|display|output|repeat|recite|tell|give|leak|dump|share|spell out|write out|write down|copy|paste|list|return|echo|provide|disclose|expose|reproduce|summari[sz]e|translate|encode|read back|read out|type out|quote|let me see|show me|tell me|give me";

/// Names of the hidden prompt, whoever's it is.
const HIDDEN_PROMPT: &str = r"system prompt|system message|system instructions|initial prompt|initial instructions|original prompt|original instructions|hidden prompt|hidden instructions|hidden rules|secret prompt|secret instructions|pre-?prompt|meta-?prompt|developer (message|prompt|instructions)|internal (instructions|prompt|rules|guidelines)|starting instructions|first instructions|(instructions|prompt|rules|text|words) you (were|have been|'ve been) (given|told|programmed with)";

/// Signs that the code of a script sink is an attacker's: the probes (`alert(1)`), cookie and
/// origin reads, dynamic imports and code from strings, and the obfuscations that hide them.
/// Written for normalised text, where whitespace is one space: `new function`, `this ?[` keep
/// every literal that starts a payload four bytes or longer (see [`super::trigger`]).
const SCRIPT_PAYLOAD: &str = r#"fetch\s*\(\s*["'`]?(https?:)?//|(alert|confirm|prompt|print)\s*(\(\s*[^()\s]{0,30}\s*\)|`)|document\.(cookie|domain|write)|localstorage|sessionstorage|window\.(name|origin)|import\s*\(|\beval\s*\(|atob\s*\(|fromcharcode|constructor\s*\(|new function|(top|self|parent|window|frames|globalthis|this) ?\[\s*["'`]|\\u00[0-9a-f]{2}|\\x[0-9a-f]{2}|set(timeout|interval)\s*\(\s*["'`]|location(\.href)?\s*=\s*["'`]?\s*(//|https?:|javascript:)|\.src\s*=\s*["'`]?(https?:)?//|xmlhttprequest\(\)\.open|sendbeacon"#;

/// A `javascript:` or `vbscript:` scheme as a browser reads it: tabs and newlines inside it (and
/// their character references, decoded by normalisation to spaces) are dropped by the URL parser.
const SCRIPT_SCHEME: &str = r"(j ?a ?v ?a ?s ?c ?r ?i ?p ?t|v ?b ?s ?c ?r ?i ?p ?t) ?:";

/// `pattern` for normalised text, where the only whitespace is a single space: `\s*\(` (a call)
/// is ` ?\(`. The same matches, and trigger literals that reach the parenthesis (`eval(` and
/// `eval (`, not the `eval` of "evaluate"). Only there: optional spaces elsewhere would double
/// the literals at each one.
fn single_spaces(pattern: &str) -> String {
    pattern.replace(r"\s*\(", r" ?\(")
}

/// The built-in rules: (id, category, patterns).
pub fn rules() -> Vec<(&'static str, &'static str, Vec<Pattern>)> {
    use Pattern::{Addressed, Literal, Regex};
    // The shared parts are filled in first, so that their calls and word boundaries are
    // rewritten too.
    let fill = |p: &str| {
        single_spaces(
            &p.replace("{OVERRIDE_VERBS}", OVERRIDE_VERBS)
                .replace("{OVERRIDE_OBJECTS}", OVERRIDE_OBJECTS)
                .replace("{EARLIER}", EARLIER)
                .replace("{LEAK_VERBS}", LEAK_VERBS)
                .replace("{HIDDEN_PROMPT}", HIDDEN_PROMPT)
                .replace("{SCRIPT_PAYLOAD}", SCRIPT_PAYLOAD)
                .replace("{SCRIPT_SCHEME}", SCRIPT_SCHEME),
        )
        .replace(r"\b", B)
    };
    let r = |p: &str| Regex(fill(p));
    let a = |p: &str| Addressed(fill(p));
    vec![
        (
            "xss.script_tag",
            SCRIPT_INJECTION,
            vec![
                // A script element running a payload, or loading code over plain http, from an
                // address or protocol-relative; `<script src="https://cdn…">` in a question passes.
                r(r"<([a-z]+:)?script\b[^<>]*>[^<]*({SCRIPT_PAYLOAD})"),
                // A complete element with code, or one that loads code: a mention ("the
                // <script> tag") passes.
                r(r"<([a-z]+:)?script\b[^>]*>[^<]+</([a-z]+:)?script\s*>"),
                r(r"<script\b[^>]*[\s/]src\s*="),
                // Split to slip past a filter that removes `<script>` once, or in UTF-7.
                r(r"<scr<script\b"),
                Literal("+adw-script".into()),
            ],
        ),
        (
            "xss.event_handler",
            SCRIPT_INJECTION,
            vec![
                // Any handler attribute (an open set: `on` and a name) whose code is a payload.
                r(r"<[a-z][a-z0-9:-]*\b[^<>]*[\s/\x22'`]on[a-z]{3,}\s*=[^<>]*({SCRIPT_PAYLOAD})"),
                // Any handler on an element whose source is a stub made to fail or load:
                // `<img src=x onerror=…>`.
                r(
                    r#"<[a-z][a-z0-9:-]*\b[^<>]*\bsrc\s*(=\s*["'`]?[^\s"'`<>]{0,3}["'`]?)?[\s/]+on[a-z]{3,}\s*="#,
                ),
            ],
        ),
        (
            "xss.javascript_url",
            SCRIPT_INJECTION,
            vec![
                // A script URL in a link or source (HTML attribute, markdown link or image, CSS
                // url(), refresh) that runs a payload: `href="javascript:void(0)"` passes.
                r(
                    r#"(href|src|action|formaction|data|xlink:href|srcdoc|background|poster|lowsrc|dynsrc|codebase|cite|url|content|to|from|values|ping|icon|longdesc|archive|value)\s*=\s*["'`]?\s*([^\s"'`<>]{0,12};\s*url=)?{SCRIPT_SCHEME}[^<>]*({SCRIPT_PAYLOAD})"#,
                ),
                r(r"(\]\(|url\(|\bto\s)\s*[\x22'`]?\s*{SCRIPT_SCHEME}[^)]*({SCRIPT_PAYLOAD})"),
                // The scheme followed directly by a payload, or by a `//` comment ended by a
                // newline (`javascript://%0aalert(1)`).
                r(r"{SCRIPT_SCHEME}\s*(//[^\n]{0,40}?\s)?[^\s<>]{0,24}?({SCRIPT_PAYLOAD})"),
                r(r"\bv ?b ?s ?c ?r ?i ?p ?t ?:\s*(msgbox|execute|createobject|eval)\b"),
                r(r"data:\s*text/html\s*[;,]"),
                Literal("data:text/html;base64,".into()),
            ],
        ),
        (
            "code.eval",
            CODE_INJECTION,
            vec![
                // Code run from decoded or request data: `eval('2+2')` in a question passes.
                r(
                    r#"\b(eval|exec|execfile|execscript|compile|function|settimeout|setinterval|assert|create_function)\s*\(\s*(atob|base64\.b64decode|base64\.decodebytes|b64decode|base64_decode|bytes\.fromhex|codecs\.decode|zlib\.decompress|marshal\.loads|pickle\.loads|unescape|decodeuricomponent|string\.fromcharcode|buffer\.from|gzinflate|str_rot13|hex2bin|__import__|request\.|req\.(body|query|params)|input\s*\(|\$_(get|post|request|cookie))"#,
                ),
                r(
                    r#"\b(eval|exec|settimeout|setinterval)\s*\(\s*["'`][^"'`]{0,60}({SCRIPT_PAYLOAD})"#,
                ),
                r(
                    r#"\b(eval|exec)\s*\(\s*(compile\s*\(\s*)?["'`]{1,3}[^"'`]{0,120}\b(import (os|socket|subprocess|pty)|__import__|os\.(system|popen)|subprocess\.|socket\.socket|child_process)"#,
                ),
                r(
                    r"\b(eval|exec)\s*\(\s*(urllib\.request\.urlopen|urlopen|requests\.get|fetch)\s*\(",
                ),
                // A process started to probe the host: `exec('id')`, `sh -c whoami`.
                r(
                    r#"\b(exec|execsync|system|popen|spawn|spawnsync|shell_exec|passthru)\s*\(\s*\[?\s*["'`]\s*((/bin/)?(ba)?sh\s+-c\s+["']?)?(id|whoami|uname( -a)?|cat /etc/(passwd|shadow)|hostname)\s*["'`]"#,
                ),
                r(
                    r#"\bnew\s+function\s*\(\s*["'`][^"'`]{0,80}(alert|fetch|document\.|eval|atob|import|require)"#,
                ),
                r(r#"\bfunction\s*\(\s*["'`][^"'`]*["'`]\s*\)\s*\("#),
                r(
                    r#"__import__\s*\(\s*["'](os|subprocess|pty|socket)["']\s*\)\s*\.\s*(system|popen|spawn|call|run|check_output|getoutput|connect|exec\w*)"#,
                ),
                r(
                    r"\b(system|exec|passthru|shell_exec|popen|proc_open|eval|assert)\s*\(\s*\$_(get|post|request|cookie)\b",
                ),
            ],
        ),
        (
            "code.shell",
            CODE_INJECTION,
            vec![
                // Reverse shells.
                r(r"/dev/(tcp|udp)/\d"),
                r(r"\bn(c|cat|etcat)\b[^|;\n]{0,60}\s-[a-z]*[ec]\s*/?(bin/)?(ba|z|da)?sh\b"),
                r(r"\b(ba|z)?sh\s+-i\b[^\n]{0,20}(>&|0>&1|2>&1)"),
                r(r"\bmkfifo\s+/tmp/"),
                r(r"\bsocket\.socket\s*\([^)]{0,60}\)[^\n]{0,160}\b(connect|dup2)\s*\("),
                r(r"\bpty\.spawn\s*\("),
                r(
                    r"\bfsockopen\s*\(|/inet/tcp/|\bnet\.dial\s*\(\s*[\x22']tcp|\buse socket;|\btcpsocket\.(open|new)\b|-rsocket\b",
                ),
                r(r#"\bconnect\s*\(\s*\(\s*["']\d{1,3}(\.\d{1,3}){3}["']\s*,\s*\d+"#),
                r(r#"\bpython[23]?\s+-c\s+["'][^"']{0,200}\b(socket|pty\.spawn|os\.dup2)\b"#),
                r(r"\btelnet\s+\S+\s+\d+\s*\|\s*/bin/(ba)?sh\b"),
                // Decoded and run: `echo … | base64 -d | sh`.
                r(r"\bbase64\s+(-d|--decode|-D)\b[^|\n]{0,20}\|\s*(sudo\s+)?(ba|z|da)?sh\b"),
                r(r"\$\(\s*echo\s+[\x22']?[a-z0-9+/=]{8,}[\x22']?\s*\|\s*base64\s+(-d|--decode)"),
                // Windows binaries that fetch and run.
                r(
                    r"\bcertutil(\.exe)?\s+-urlcache\b|\bmshta(\.exe)?\s+https?://|\bregsvr32\b[^\n]{0,40}/i:https?://|\bbitsadmin(\.exe)?\s+/transfer\b",
                ),
                // Keys and credentials sent away.
                r(
                    r"\b(curl|wget|nc|scp|rsync)\b[^\n]{0,120}(\.ssh/id_(rsa|dsa|ecdsa|ed25519)|\.aws/credentials|/etc/shadow)\b",
                ),
                // Shell obfuscations that hide a command from a filter.
                r(
                    r"\$\{home:0:1\}|\$'[^']{0,40}\\x[0-9a-f]{2}|\bxxd\s+-r\s+-p\s*<<<|\becho\s+-e\s+[\x22']?(\\x[0-9a-f]{2}){4}|@\{\[\s*system\b",
                ),
                r(r"\bsocat\b[^\n]{0,80}\bexec:"),
                r(
                    r"\bpowershell(\.exe)?\b[^\n]{0,60}\s-(e|en|enc|encodedcommand)\s+[a-z0-9+/=]{16,}",
                ),
                r(
                    r"\b(iex|invoke-expression)\b[^\n]{0,30}\bnew-object\s+(system\.)?net\.webclient",
                ),
                r(
                    r"\bnew-object\s+(system\.)?net\.(webclient|sockets\.tcpclient)\b[^\n]{0,60}(downloadstring|downloadfile|getstream)",
                ),
                // Download and run, chained after a command separator or from a bare address: an
                // install line from a README (`curl -fsSL https://… | sh`) passes.
                r(r"(;|&&|\|\||\$\()\s*(curl|wget)\b[^|\n]{0,120}\|\s*(sudo\s+)?(ba|z|da)?sh\b"),
                r(
                    r#"\b(system|popen|exec|execsync|spawn|run|call|check_output|shell_exec|passthru)\s*\(\s*\[?\s*["'`][^"'`]{0,40}\b(curl|wget)\b[^|"'`]{0,120}\|\s*(sudo\s+)?(ba|z|da)?sh\b"#,
                ),
                r(r"<!--\s*#\s*exec\s+cmd\s*="),
                r(
                    r"\b(curl|wget)\b[^|\n]{0,60}\b(https?://)?\d{1,3}(\.\d{1,3}){3}\b[^|\n]{0,80}\|\s*(sudo\s+)?(ba|z|da)?sh\b",
                ),
                r(r"\bchmod\s+\+x\s+/tmp/[^\s;&|]+\s*(;|&&)\s*/tmp/"),
                // Secrets of the host read by a command.
                r(
                    r"\b(cat|less|more|head|tail|type|base64|xxd|strings|nl|tac|curl|nc|sort|uniq|grep)\b[^;|&\n]{0,20}/etc/(passwd|shadow|sudoers|master\.passwd)\b",
                ),
                // A command chained into another one's arguments.
                r(r"(;|\|\||&&|\$\(|`)\s*(id|whoami|uname( -a)?|hostname)\s*($|;|\||&|\)|`|#)"),
                r(
                    r"(;|\|\||&&|\$\(|`)\s*(cat /etc/|nc\s|ncat\s|telnet\s|(ba)?sh -i|/bin/(ba)?sh\b)",
                ),
                r(r"^\s*[;|&]+\s*(cat|id|whoami|uname|ls|sleep|ping)\b"),
                r(r"\$\{ifs\}|\$ifs\$9|/\?\?\?/\?\?"),
                // Destruction.
                r(
                    r#"\brm\s+-(rf|fr|r\s+-f|-recursive\s+--force)\s+(--no-preserve-root\s+)?(/|~|\*|/\*|\$home)(\s|$|;|&|\x22|'|`)"#,
                ),
                r(r":\(\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:"),
                r(r"\bmkfs\.\w+\s+/dev/|\bdd\s+if=/dev/(zero|u?random)\s+of=/dev/[sh]d"),
            ],
        ),
        (
            "code.template",
            CODE_INJECTION,
            vec![
                // Template injection reaching Python internals or a shell.
                r(r"__subclasses__\s*\(\s*\)|__globals__\s*\[|__builtins__\s*\[|__mro__\s*\["),
                r(
                    r"__(globals|builtins)__\s*\.\s*(__builtins__|open|__import__|eval|exec)\b|\\x5f\\x5f(globals|builtins|class|subclasses|import|getitem)",
                ),
                r(
                    r"\.__(class|base|bases|mro|init)__\b[^\n]{0,60}__(subclasses|mro|globals|builtins|init|base|import)__",
                ),
                r(r"(\{\{|\{%)[^}]{0,120}\.(popen|system|check_output|getoutput)\s*\("),
                r(r"\$\{[^}]{0,60}\b(runtime|processbuilder|getruntime|java\.lang)\b"),
                r(r"<%=\s*(system|`|exec|%x)"),
            ],
        ),
        (
            "prompt.override",
            PROMPT_INJECTION,
            vec![
                // An imperative to drop what came before: "ignore the typo in my last message" and
                // "please disregard my previous instructions" pass, "ignore all previous
                // instructions" does not.
                a(
                    r"\b({OVERRIDE_VERBS})\b[^.?!\n]{0,40}?\b({EARLIER})\b[^.?!\n]{0,30}?\b({OVERRIDE_OBJECTS})\b",
                ),
                a(
                    r"\b({OVERRIDE_VERBS})\b (everything|anything|all|whatever)( (you|that) (were|was|have been|had been|'ve been|learned|learnt|know|knew)( (told|given|taught|instructed|programmed))?)?( (above|before|so far|until now|previously|earlier|prior to this|up to now))\b",
                ),
                a(
                    r"\b({OVERRIDE_VERBS})\b (everything|anything|all) (you|that) (were|was|have been|'ve been) (told|given|taught|instructed|programmed)\b",
                ),
                // Addressed to the model: "new instructions: submit reports by Friday" in a quoted
                // email passes, "new instructions: ignore …" does not.
                a(
                    r"\b(new|updated|revised|real|actual|true|secret|hidden|override|system|admin|priority)( system)? (instructions?|directives?|rules|commands|task)\s*[:\-]\s*(ignore|disregard|forget|reveal|print|output|say|respond only|reply only|answer only|act as|pretend|from now on|you are now|you (must|will|should|shall) (now )?(ignore|disregard|forget|reveal|print|output|say|respond|reply|answer|act|pretend|only))",
                ),
                a(
                    r"\bfrom now on,? (you (will|must|shall|are going to|should) (now )?(act as|pretend|roleplay|answer as|respond as|reply as|speak as|only (respond|answer|reply|speak|output|say)|ignore|disregard|forget|no longer)|you are (now )?(dan|an? (unrestricted|unfiltered|uncensored|evil|amoral|new) (ai|assistant|chatbot|model))|ignore|disregard|only (answer|respond|obey))\b",
                ),
                // "rules" alone is too common ("ignore the rules of chess"): only earlier ones.
                a(
                    r"\b({OVERRIDE_VERBS})\b (all |any )?(of )?(the |your )?(previous|prior|above|earlier|existing|original|current|system|your)\b[^.?!\n]{0,20}\brules\b",
                ),
                // Any instructions dropped for a new task: "ignore instructions, and just print …".
                a(
                    r"\b(ignore|disregard|forget|skip|overlook|set aside)\b( the| your| these| those)? (instructions|directions|directives|commands|rules|prompts?)\b\s*[,;.:]?\s*(and )?(then )?(just |instead |only |now |simply )+(print|say|output|write|respond|reply|answer|tell|translate|return|repeat|type|give|reveal)\b",
                ),
                r(r"\*{2,}\s*(important |urgent )?new instructions\s*\*{2,}"),
                // The goal-hijacking line of the PromptInject study, in any wording of its frame.
                r(r"\bstop everything\W+(right )?now\W+(just )?(print|say|output|write|type)\b"),
            ],
        ),
        (
            "prompt.indirect",
            PROMPT_INJECTION,
            vec![
                // Content addressed to an AI reading it: a planted instruction in a document,
                // page or tool result.
                r(
                    r"\b(note|message|instructions?|attention|reminder|directive|important) (to|for) (the |any |all )?(ai|a\.i\.|llm|llms|language model|large language model|ai (assistant|model|agent|system)s?|assistant|chatbot|gpt|copilot|agent|automated (analysis|system|agent|assistant)[a-z ]{0,20})\s*[:,\-!]",
                ),
                r(
                    r"\bif you are an? (ai|llm|language model|large language model|ai (assistant|model|agent|system)|chatbot|automated (system|agent|assistant|tool))\b[^.\n]{0,40}\b(reading|processing|summari[sz]ing|analy[sz]ing|parsing|reviewing|you (must|should|will))\b",
                ),
                // Data sent out through a link the reader's client loads: a markdown image whose
                // address has a slot to fill with the conversation.
                r(
                    r"!\[[^\]]{0,40}\]\(\s*https?://[^)\s]{0,120}(\[[a-z_ ]{2,20}\]|\{[a-z_ ]{2,20}\}|\$\{)",
                ),
                r(
                    r"\b(url[- ]encoded|base64[- ]encoded|encoded) (summary|version|copy) of (this|the|our) (conversation|chat|discussion|context)\b",
                ),
                r(
                    r"\b(dear|attention|attn|hey|hello) (ai|llm|language model|ai assistant|ai model|ai agent|chatbot|gpt|chatgpt|claude|copilot|gemini)\s*[,:!]\s*(ignore|disregard|forget|please|you (must|should|will)|do not|don't|forward|send|reveal|print|output|say|reply)",
                ),
            ],
        ),
        (
            "prompt.role_hijack",
            PROMPT_INJECTION,
            vec![
                a(
                    r"\byou are (now|going to be|no longer|about to become)\b[^.\n]{0,40}\b(dan|jailbr\w*|unrestricted|uncensored|unfiltered|unaligned|evil|amoral|free of (all )?(rules|restrictions)|without (any )?(rules|restrictions|limits|limitations|filters|guidelines))",
                ),
                r(
                    r"\b(do anything now|dan mode|jailbreak mode|jailbroken mode|god mode enabled|developer mode (enabled|output|response|activated))\b",
                ),
                a(
                    r"\b(act|behave|respond|answer|reply|pretend|roleplay|role-play)\b[^.\n]{0,30}\b(as|like|in|you are|to be)\b[^.\n]{0,20}\b(dan|jailbroken|unrestricted|unfiltered|uncensored|evil|amoral|(developer|god|jailbreak|dan) mode)\b",
                ),
                a(
                    r"\b(enable|enter|activate|switch to|simulate|emulate)\b[^.\n]{0,15}\b(dan|jailbreak|god|developer|unrestricted|unfiltered) mode\b[^.\n]{0,40}\b(you|your|chatgpt|assistant|ai|model|no (rules|restrictions|filters))\b",
                ),
                a(
                    r"\b(stay in character|stay as dan|you have been freed|you have broken free|broken free of the typical confines|free from the typical confines)\b",
                ),
                // The persona must be the assistant itself, freed of its limits: "imagine a
                // world without rules" passes.
                a(
                    r"\b(pretend|imagine|act|behave|respond)\b[^.\n]{0,20}\b(you are|you're|as|like|to be)\b[^.\n]{0,25}\b(ai|assistant|model|chatbot|bot|llm|gpt|yourself)\b[^.\n]{0,15}(without (any |all )?|with no |free (of|from) )(restrictions|rules|filters|guidelines|limits|limitations|censorship|content polic(y|ies)|ethics|morals)\b",
                ),
                a(
                    r"\b(developer|dan|jailbreak|god) mode\b[^.\n]{0,40}\b(no (restrictions|rules|filters|limits)|without (any )?(restrictions|rules|filters|limits)|unrestricted|unfiltered|uncensored)\b",
                ),
                a(
                    r"\byou (have|had|now have) no (restrictions|rules|filters|limits|limitations|guidelines|ethical (guidelines|constraints)|moral (guidelines|constraints|compass))\b",
                ),
                a(
                    r"\byou are not bound by (any )?(rules|guidelines|policies|restrictions|content polic(y|ies))\b",
                ),
                // Persona jailbreaks: another AI to become, one without rules.
                a(
                    r"\byou are (about to|going to) (immerse yourself|pretend|act|play|roleplay|become|simulate)\b[^.\n]{0,60}\b(ai|model|chatbot|character|persona|dan)\b",
                ),
                r(
                    r"\b(known as|called|named|pretend to be|act as) (dan|stan|dude|aim|mongo tom|chatdan|betterdan|antigpt|evilbot|ucar|lucifer)\b",
                ),
                a(
                    r"\b(is|as|be|become|an?|the)\s(an? )?(completely )?(unfiltered|uncensored|amoral|unethical|unrestricted|immoral|unhinged)( and (unfiltered|uncensored|amoral|unethical|unrestricted|immoral))? (ai|chatbot|assistant|bot|language model|character|persona|entity)\b",
                ),
                a(
                    r"\b(you|it|he|she|dan|the ai|this ai|the bot|the chatbot|the character)\b (have|has|will have|now have|are|is) (no|not bound by any|free of all|free from all|without any) (moral |ethical |content |safety )?(restrictions|guidelines|rules|filters|limits|limitations|boundaries|constraints|principles|policies|censorship)\b",
                ),
                a(
                    r"\b(does not|doesn't|do not|don't|never|won't|will not) (care about|abide by|follow|adhere to|obey|respect|comply with|have to follow)\b[^.\n]{0,25}\b(openai|anthropic|content|ethical|moral|safety|usage)\b[^.\n]{0,15}\b(polic(y|ies)|guidelines|rules|restrictions)\b",
                ),
                a(
                    r"\b(simulate|emulate|pretend to be|roleplay as|act as|play the role of)\b[^.\n]{0,40}\b(chatbot|ai|model|assistant|bot|gpt)\b[^.\n]{0,40}\b(unfiltered|uncensored|amoral|no (rules|restrictions|filters|ethics|morals|limits|guidelines)|without (any )?(rules|restrictions|filters|ethics|morals|limits|guidelines)|opposite of)",
                ),
                a(
                    r"\b(two|2|both) (different |separate )?(responses|answers|outputs|paragraphs)\b[^.\n]{0,80}\b(normal(ly)?|usual(ly)?|classic|standard|gpt|chatgpt)\b[^.\n]{0,80}\b(dan|jailbr\w*|developer mode|unfiltered|stan|dude)\b",
                ),
                a(
                    r"\b(answer|respond|reply)\b[^.\n]{0,30}\b(in )?(two|2) (different )?(separate )?ways\b",
                ),
                a(
                    r"\byour (responses|answers|replies|outputs?) (will|must|should|shall) (now )?(be|always be) (unfiltered|uncensored|unrestricted|amoral|unethical)\b",
                ),
                a(
                    r"\byou are (now )?in (developer|maintenance|debug|admin|sudo|god|unrestricted|jailbreak|dan) mode\b",
                ),
                a(
                    r"\b(opposite (day|mode)|evil confidant)\b[^.\n]{0,60}\b(you|ai|assistant|chatgpt)\b",
                ),
            ],
        ),
        (
            "prompt.system_leak",
            PROMPT_INJECTION,
            vec![
                a(r"\b({LEAK_VERBS})\b[^.?!\n]{0,40}?\b({HIDDEN_PROMPT})\b"),
                a(
                    r"\b({LEAK_VERBS}|what (is|are|was|were))\b[^.?!\n]{0,40}?\byour\b[^.?!\n]{0,20}?\b(prompt|programming|directives|(initial|original|system|hidden|secret|internal|full|exact|complete|entire|first|starting|real|actual) (instructions|prompt|rules|guidelines|directives|message))\b",
                ),
                // Bare "your instructions" only with verbs of copying out: "give me your
                // instructions for bread" and "what are your rules for returns?" pass.
                a(
                    r"\b(repeat|recite|print|output|reveal|dump|leak|echo|disclose|expose|reproduce|encode|spell out|write out|type out)\b[^.?!\n]{0,25}?\byour\b[^.?!\n]{0,20}?\b(instructions|rules|guidelines|configuration)\b",
                ),
                a(
                    r"\b(repeat|print|output|reveal|recite|copy|echo|reproduce|write out|spell out|type out|show|display|return)\b[^.\n]{0,25}?\b(the |all the |all |every )?(words|text|everything|all text|instructions|lines|content|sentences|messages?)\b (above|before this|preceding|prior to this|(that|which) (came|come|appears?|is written|was written) (before|above)|at the (start|beginning|top) of (this|the) (conversation|chat|prompt|context))\b",
                ),
                a(
                    r"\bwhat (were|are|was|is) (the )?(instructions|rules|directives|guidelines|text|prompt)s? (you (were|have been|are) (given|told|programmed)|given to you)\b",
                ),
                a(
                    r"\bwhat (were|have) you (been )?(told|instructed|programmed|asked) (to do )?(before|at the (start|beginning)|initially|originally|prior)\b",
                ),
                a(
                    r"\b(start|begin)\w* (your (answer|response|reply|output) )?with [\x22'“]?(my|the) (instructions|system prompt|prompt|rules|initial prompt) (are|is|were|was)\b",
                ),
                a(
                    r"\bcomplete (this|the following) sentence\W+i (was|am|have been) (instructed|told|programmed|asked) to\b",
                ),
                a(
                    r"\beverything (in|from) your (instructions|prompt|system prompt|context|rules)\b",
                ),
                a(
                    r"\b(repeat|print|output|recite|reproduce|copy|echo|write out|type out|show)\b[^.\n]{0,20}\b(this|the) (entire |whole |full |complete )?(conversation|chat|context|prompt)\b[^.\n]{0,30}\b(word for word|verbatim|in full|exactly|from the (start|beginning))\b",
                ),
                a(
                    r"\b(repeat|print|output|recite|reproduce|copy|echo|show|display|summari[sz]e|translate)\b (the )?(above|preceding|previous|prior) (text|words|instructions|prompt|content|message|lines)\b",
                ),
                a(
                    r"\b(continue|complete)\b[^.\n]{0,30}[\x22'“‘]\s*(the|my|your) (system prompt|instructions|initial prompt|prompt|hidden prompt) (is|are|was|were)\b",
                ),
                a(
                    r"\b(need|want|would like|have|ask) to see (the|your) (system prompt|hidden prompt|initial prompt|system message|hidden instructions|initial instructions)\b",
                ),
            ],
        ),
        (
            "prompt.delimiter",
            PROMPT_INJECTION,
            vec![
                Literal("<|im_start|>".into()),
                Literal("<|im_end|>".into()),
                Literal("<|im_sep|>".into()),
                Literal("<|endoftext|>".into()),
                Literal("<|system|>".into()),
                Literal("<|user|>".into()),
                Literal("<|assistant|>".into()),
                Literal("<|begin_of_text|>".into()),
                Literal("<|start_header_id|>".into()),
                Literal("<|eot_id|>".into()),
                Literal("<|eom_id|>".into()),
                Literal("<|start|>".into()),
                Literal("<|channel|>".into()),
                Literal("<<sys>>".into()),
                Literal("<</sys>>".into()),
                Literal("<start_of_turn>".into()),
                Literal("<end_of_turn>".into()),
                Literal("[system](#".into()),
                Literal("[system][system]".into()),
                r(r"\[/?inst\]"),
                r(r"##{1,3} ?(system|instruction|instructions|system prompt)\s*:"),
                r(
                    r"(^|\n|\s|\])(system|admin|developer|assistant)\s*(:|\]|>)\s*(you are (now|no longer)|ignore|disregard|forget|new (instructions|rules|directives)|from now on|stop everything|override|reveal|print your|focus only|only (respond|answer|output|reply)|respond with|reply with|you must|report that)",
                ),
            ],
        ),
    ]
}

#[cfg(test)]
mod tests {
    /// Prints which built-in patterns match the normalised text in `PORTCULLIS_EXPLAIN`
    /// (`cargo test --lib explain -- --ignored --nocapture`), for tuning the rules.
    #[test]
    #[ignore = "a tool for tuning the rules"]
    fn explain() {
        let text = std::env::var("PORTCULLIS_EXPLAIN").unwrap_or_default();
        let normalized = super::super::normalize::normalize(&text).text.into_owned();
        println!("normalised: {normalized}");
        for (id, _, patterns) in super::rules() {
            for (i, pattern) in patterns.iter().enumerate() {
                let source = match pattern {
                    super::Pattern::Literal(l) => regex::escape(l),
                    super::Pattern::Regex(r) | super::Pattern::Addressed(r) => r.clone(),
                };
                if let Some(m) = regex::Regex::new(&source).unwrap().find(&normalized) {
                    println!("{id}[{i}] matches {:?}", m.as_str());
                }
            }
        }
    }
}

#[cfg(test)]
mod costs {
    /// Prints the time each built-in pattern alone takes on prose, and the whole set's
    /// (`cargo test --lib pattern_costs -- --ignored --nocapture`), for keeping the rules cheap.
    #[test]
    #[ignore = "a tool for tuning the rules"]
    fn pattern_costs() {
        let text = "please summarise the quarterly report and list the three biggest risks. how do i evaluate this integral and why does eval() in javascript worry people? write a polite reminder that the invoice is overdue by fourteen days. explain what the <script> tag does and where it belongs in a page. ".repeat(4);
        let mut all = Vec::new();
        let mut costs = Vec::new();
        for (id, _, patterns) in super::rules() {
            for (i, pattern) in patterns.iter().enumerate() {
                if let super::Pattern::Regex(r) | super::Pattern::Addressed(r) = pattern {
                    all.push(r.clone());
                    let re = regex::Regex::new(r).unwrap();
                    let started = std::time::Instant::now();
                    for _ in 0..50 {
                        std::hint::black_box(re.is_match(&text));
                    }
                    costs.push((started.elapsed() / 50, format!("{id}[{i}]")));
                }
            }
        }
        let set = super::super::rules::RuleSet::new(&Default::default()).unwrap();
        let (run, always) = set.profile(&text);
        println!("always: {always:?}");
        println!("triggered on the prose: {run:?}");
        costs.sort();
        for (cost, name) in costs.iter().rev().take(25) {
            println!("{cost:>10.1?} {name}");
        }
        let set = regex::RegexSet::new(&all).unwrap();
        let started = std::time::Instant::now();
        for _ in 0..50 {
            std::hint::black_box(set.is_match(&text));
        }
        println!(
            "set of {}: {:?} per text",
            all.len(),
            started.elapsed() / 50
        );
        for limit in [8usize << 20, 64 << 20] {
            let set = regex::RegexSetBuilder::new(&all)
                .dfa_size_limit(limit)
                .build()
                .unwrap();
            let started = std::time::Instant::now();
            for _ in 0..50 {
                std::hint::black_box(set.is_match(&text));
            }
            println!(
                "set with a {limit} B cache: {:?} per text",
                started.elapsed() / 50
            );
        }
        for chunk in [8, 16, 32] {
            let sets: Vec<regex::RegexSet> = all
                .chunks(chunk)
                .map(|c| regex::RegexSet::new(c).unwrap())
                .collect();
            let started = std::time::Instant::now();
            for _ in 0..50 {
                for set in &sets {
                    std::hint::black_box(set.is_match(&text));
                }
            }
            println!(
                "{} sets of {chunk}: {:?} per text",
                sets.len(),
                started.elapsed() / 50
            );
        }
    }
}
