// llama-chat-parse: what llama-server reports for a generated text, without a model.
//
// The reference side of hal0's native tool-call parse tests (issue 26). It goes through the calls
// llama-server makes for a chat request (tools/server/server-common.cpp oaicompat_chat_params_parse,
// server-schema.cpp params_from_json, server-task.cpp update_chat_msg): common_chat_templates_init with
// the template, common_chat_templates_apply with the request's tools and options, the parser params
// carried over as the server carries them (format, generation_prompt, the parser arena serialised and
// loaded again, reasoning_format), then common_chat_parse(text, is_partial=false, params).
//
// Input: one JSON object per stdin line:
//   {"template": "<jinja source>", "tools": [...OpenAI tools...], "text": "<generated text>",
//    "reasoning_format": "none"|"auto"|"deepseek"|"deepseek-legacy" (default "deepseek": common_params'
//    default, so llama-server's without --reasoning-format; its --help says "auto", which parses the same),
//    "tool_choice": "auto" (default), "parallel_tool_calls": bool (default: the template's caps, as the server),
//    "messages": [...] (default one user turn), "chat_template_kwargs": {...}, "enable_thinking": bool
//    (default: whether the template supports it, as the server with --reasoning auto),
//    "bos_token": "", "eos_token": "", "want_prompt": false (also print the rendered prompt),
//    "add_generation_prompt": true (false with an assistant turn last shows how the template writes it)}
// Output: one JSON object per line: {"format", "generation_prompt", "grammar_lazy", "grammar_triggers",
//   "preserved_tokens", "additional_stops", "supports_thinking", "thinking_start_tag", "thinking_end_tags",
//   "message": the server's message JSON (to_json_oaicompat), "result": {content, reasoning_content,
//   tool_calls: [{name, arguments}]} with arguments parsed when they are JSON, else the raw string}
//   or {"error": "..."} (with "stage": "apply" or "parse") where the server would fail the request.
#include "build-info.h"
#include "chat.h"
#include "common.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>
#include <string>

using json = nlohmann::ordered_json;

static const char * trigger_type_name(common_grammar_trigger_type t) {
    switch (t) {
        case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN:        return "token";
        case COMMON_GRAMMAR_TRIGGER_TYPE_WORD:         return "word";
        case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN:      return "pattern";
        case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL: return "pattern_full";
    }
    return "unknown";
}

static json handle(const json & req) {
    json out = json::object();
    const std::string tmpl_src = req.at("template").get<std::string>();
    const json tools = req.value("tools", json::array());
    const std::string text = req.at("text").get<std::string>();
    const std::string tool_choice = req.value("tool_choice", std::string("auto"));
    json messages = req.value("messages", json::array({json{{"role", "user"}, {"content", "What is the weather in Paris?"}}}));

    common_chat_templates_ptr tmpls;
    common_chat_params chat_params;
    common_chat_parser_params pp;
    try {
        // as server-context.cpp: templates from the model (here: the file), thinking on when the template supports it
        tmpls = common_chat_templates_init(nullptr, tmpl_src, req.value("bos_token", std::string()), req.value("eos_token", std::string()));
        const bool supports_thinking = common_chat_templates_support_enable_thinking(tmpls.get());
        auto caps = common_chat_templates_get_caps(tmpls.get());

        // as oaicompat_chat_params_parse
        common_chat_templates_inputs inputs;
        inputs.messages            = common_chat_msgs_parse_oaicompat(common_json::parse(messages.dump()));
        inputs.tools               = common_chat_tools_parse_oaicompat(common_json::parse(tools.dump()));
        inputs.tool_choice         = common_chat_tool_choice_parse_oaicompat(tool_choice);
        inputs.use_jinja           = true;
        inputs.parallel_tool_calls = req.value("parallel_tool_calls", caps["supports_parallel_tool_calls"]);
        inputs.add_generation_prompt = req.value("add_generation_prompt", true);
        inputs.reasoning_format    = common_reasoning_format_from_name(req.value("reasoning_format", std::string("deepseek")));
        inputs.enable_thinking     = req.value("enable_thinking", supports_thinking);
        const json kwargs = req.value("chat_template_kwargs", json::object());
        for (const auto & item : kwargs.items()) {
            inputs.chat_template_kwargs[item.key()] = item.value().dump();
        }
        auto it = inputs.chat_template_kwargs.find("enable_thinking");
        if (it != inputs.chat_template_kwargs.end()) {
            if (it->second == "true") {
                inputs.enable_thinking = true;
            } else if (it->second == "false") {
                inputs.enable_thinking = false;
            }
        }
        chat_params = common_chat_templates_apply(tmpls.get(), inputs);

        // as params_from_json: the request's llama_params carried into the slot's parser params
        pp.format            = chat_params.format;
        pp.reasoning_format  = inputs.reasoning_format;
        pp.reasoning_in_content = false;  // not streamed
        pp.generation_prompt = chat_params.generation_prompt;
        pp.parse_tool_calls  = !inputs.tools.empty() && inputs.tool_choice != COMMON_CHAT_TOOL_CHOICE_NONE ? true : pp.parse_tool_calls;
        if (!chat_params.parser.empty()) {
            pp.parser.load(chat_params.parser);
        }
    } catch (const std::exception & e) {
        out["error"] = e.what();
        out["stage"] = "apply";
        return out;
    }

    out["format"]            = common_chat_format_name(chat_params.format);
    out["generation_prompt"] = chat_params.generation_prompt;
    out["grammar_lazy"]      = chat_params.grammar_lazy;
    out["has_grammar"]       = !chat_params.grammar.empty();
    json triggers = json::array();
    for (const auto & t : chat_params.grammar_triggers) {
        triggers.push_back(json{{"type", trigger_type_name(t.type)}, {"value", t.value}});
    }
    out["grammar_triggers"]   = triggers;
    out["preserved_tokens"]   = chat_params.preserved_tokens;
    out["additional_stops"]   = chat_params.additional_stops;
    out["supports_thinking"]  = chat_params.supports_thinking;
    out["thinking_start_tag"] = chat_params.thinking_start_tag;
    out["thinking_end_tags"]  = chat_params.thinking_end_tags;
    if (req.value("want_prompt", false)) {
        out["prompt"] = chat_params.prompt;
    }

    try {
        common_chat_msg msg = common_chat_parse(text, /* is_partial */ false, pp);
        out["message"] = json::parse(msg.to_json_oaicompat().dump());
        json calls = json::array();
        for (const auto & tc : msg.tool_calls) {
            json args = json::parse(tc.arguments, nullptr, /* allow_exceptions */ false);
            calls.push_back(json{{"name", tc.name}, {"arguments", args.is_discarded() ? json(tc.arguments) : args}});
        }
        out["result"] = json{{"content", msg.content}, {"reasoning_content", msg.reasoning_content}, {"tool_calls", calls}};
    } catch (const std::exception & e) {
        out["error"] = e.what();
        out["stage"] = "parse";
    }
    return out;
}

int main(int argc, char ** argv) {
    if (argc > 1 && std::string(argv[1]) == "--version") {
        std::printf("llama-chat-parse (llama.cpp common %s)\n", llama_build_info());
        return 0;
    }
    if (argc > 1) {
        std::fprintf(stderr, "usage: llama-chat-parse [--version] < requests.jsonl > results.jsonl\n");
        return 2;
    }
    std::string line;
    while (std::getline(std::cin, line)) {
        if (line.empty()) {
            continue;
        }
        json out;
        try {
            out = handle(json::parse(line));
        } catch (const std::exception & e) {
            out = json{{"error", std::string("bad request: ") + e.what()}, {"stage", "request"}};
        }
        std::cout << out.dump() << std::endl;
    }
    return 0;
}
