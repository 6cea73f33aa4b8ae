// The emulated libnvrtc.so.12: compiles CUDA C for the host. The program is first compiled by the real NVRTC
// (libnvrtc.so.11.2 from Debian, or FRUGAL_EMU_REAL_NVRTC), so that whatever a GPU build would reject is rejected
// with NVRTC's own diagnostics; then g++ (FRUGAL_EMU_CXX) compiles it, with include/frugal_emu_cuda.h
// force-included, into a host shared object (a "module", see abi.h) whose bytes are the program's "CUBIN".
#include <nvrtc.h>

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "abi.h"

extern char** environ;

#define EXPORT extern "C" __attribute__((visibility("default")))

struct _nvrtcProgram {
    std::mutex lock;
    std::string source, name;
    std::vector<std::pair<std::string, std::string>> headers;  // include name, text
    std::string log;
    std::string cubin;
    bool compiled = false;
};

namespace {

std::mutex g_lock;
std::map<nvrtcProgram, std::shared_ptr<_nvrtcProgram>> g_programs;

std::shared_ptr<_nvrtcProgram> find(nvrtcProgram p) {
    std::lock_guard<std::mutex> g(g_lock);
    auto it = g_programs.find(p);
    return it == g_programs.end() ? nullptr : it->second;
}

// ---- the real NVRTC ----
struct Real {
    bool tried = false;
    void* handle = nullptr;
    std::string error;  // why it could not be loaded
    std::string path;
    int major = 0, minor = 0;
    decltype(&nvrtcVersion) version = nullptr;
    decltype(&nvrtcCreateProgram) create = nullptr;
    decltype(&nvrtcCompileProgram) compile = nullptr;
    decltype(&nvrtcGetProgramLogSize) log_size = nullptr;
    decltype(&nvrtcGetProgramLog) log = nullptr;
    decltype(&nvrtcDestroyProgram) destroy = nullptr;
    decltype(&nvrtcGetErrorString) error_string = nullptr;
};

Real& real() {
    static Real r;
    static std::mutex m;
    std::lock_guard<std::mutex> g(m);
    if (r.tried) return r;
    r.tried = true;
    const char* env = getenv("FRUGAL_EMU_REAL_NVRTC");
    std::vector<std::string> candidates;
    if (env && *env) {
        candidates.push_back(env);
    } else {
        candidates.push_back("libnvrtc.so.11.2");
        candidates.push_back("/usr/lib/x86_64-linux-gnu/libnvrtc.so.11.2");
    }
    std::string why;
    for (auto& c : candidates) {
        void* h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            const char* e = dlerror();
            why += "\n  dlopen(\"" + c + "\"): " + (e ? e : "failed");
            continue;
        }
        r.version = (decltype(r.version))dlsym(h, "nvrtcVersion");
        r.create = (decltype(r.create))dlsym(h, "nvrtcCreateProgram");
        r.compile = (decltype(r.compile))dlsym(h, "nvrtcCompileProgram");
        r.log_size = (decltype(r.log_size))dlsym(h, "nvrtcGetProgramLogSize");
        r.log = (decltype(r.log))dlsym(h, "nvrtcGetProgramLog");
        r.destroy = (decltype(r.destroy))dlsym(h, "nvrtcDestroyProgram");
        r.error_string = (decltype(r.error_string))dlsym(h, "nvrtcGetErrorString");
        if (!r.version || !r.create || !r.compile || !r.log_size || !r.log || !r.destroy || !r.error_string ||
            r.version(&r.major, &r.minor) != NVRTC_SUCCESS) {
            why += "\n  " + c + ": not a usable NVRTC (missing entry points or nvrtcVersion failed)";
            dlclose(h);
            continue;
        }
        r.handle = h;
        r.path = c;
        return r;
    }
    r.error = "the emulated NVRTC validates every program with the real NVRTC first, and none could be loaded "
              "(set FRUGAL_EMU_REAL_NVRTC to its path):" + why;
    return r;
}

// ---- files and processes ----
bool write_file(const std::string& path, const std::string& text) {
    FILE* f = fopen(path.c_str(), "wb");
    if (!f) return false;
    bool ok = fwrite(text.data(), 1, text.size(), f) == text.size();
    ok = fclose(f) == 0 && ok;
    return ok;
}

bool read_file(const std::string& path, std::string& out) {
    FILE* f = fopen(path.c_str(), "rb");
    if (!f) return false;
    out.clear();
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    bool ok = !ferror(f);
    fclose(f);
    return ok;
}

void remove_tree(const std::string& path) {
    DIR* d = opendir(path.c_str());
    if (d) {
        while (dirent* e = readdir(d)) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            std::string p = path + "/" + e->d_name;
            struct stat st;
            if (lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
                remove_tree(p);
            else
                unlink(p.c_str());
        }
        closedir(d);
    }
    rmdir(path.c_str());
}

// Runs argv (PATH searched), its stdout and stderr into `output`. Returns the exit status, or -1 with `output`
// saying why it could not run.
int run(const std::vector<std::string>& args, std::string& output) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        output = std::string("pipe: ") + strerror(errno);
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        output = "cannot run " + args[0] + ": " + strerror(rc);
        return -1;
    }
    char buf[16384];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) != 0) {
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (output.size() < (1u << 20)) output.append(buf, (size_t)n);
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    output += "\n" + args[0] + " was killed by signal " + std::to_string(WTERMSIG(status));
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

std::string prelude_dir() {
    Dl_info info;
    if (!dladdr((void*)&prelude_dir, &info) || !info.dli_fname) return "";
    std::string lib = info.dli_fname;
    size_t slash = lib.rfind('/');
    std::string dir = (slash == std::string::npos ? "." : lib.substr(0, slash)) + "/../include";
    char* abs = realpath(dir.c_str(), nullptr);  // dladdr reports the path as it was opened: maybe relative
    if (abs) {
        dir = abs;
        free(abs);
    }
    return dir;
}

// ---- source rewrites before host compilation ----

// A minimal lexer over CUDA C text: skips comments, string and character literals.
struct Lexer {
    const std::string& s;
    size_t i = 0;
    explicit Lexer(const std::string& text) : s(text) {}
    static bool ident_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
    static bool ident_char(char c) { return ident_start(c) || (c >= '0' && c <= '9'); }
    // Skips whitespace, line continuations and comments from i.
    void skip_space() {
        for (;;) {
            if (i >= s.size()) return;
            char c = s[i];
            if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') { ++i; continue; }
            if (c == '\\' && i + 1 < s.size() && (s[i + 1] == '\n' || s[i + 1] == '\r')) { i += 2; continue; }
            if (c == '/' && i + 1 < s.size() && s[i + 1] == '/') {
                while (i < s.size() && s[i] != '\n') ++i;
                continue;
            }
            if (c == '/' && i + 1 < s.size() && s[i + 1] == '*') {
                size_t e = s.find("*/", i + 2);
                i = e == std::string::npos ? s.size() : e + 2;
                continue;
            }
            return;
        }
    }
    // At a quote: skips the literal, appending its (unescaped, roughly) contents to `out` when given.
    void skip_literal(std::string* out = nullptr) {
        char q = s[i++];
        while (i < s.size() && s[i] != q) {
            if (s[i] == '\\' && i + 1 < s.size()) {
                char e = s[i + 1];
                if (out) *out += e == 'n' ? '\n' : e == 't' ? '\t' : e;
                i += 2;
                continue;
            }
            if (out) *out += s[i];
            ++i;
        }
        if (i < s.size()) ++i;
    }
    // At '(' : index one past the matching ')', or npos.
    size_t match_paren(size_t open) const {
        int depth = 0;
        Lexer l(s);
        l.i = open;
        while (l.i < s.size()) {
            l.skip_space();
            if (l.i >= s.size()) break;
            char c = s[l.i];
            if (c == '"' || c == '\'') { l.skip_literal(); continue; }
            if (c == '(') ++depth;
            if (c == ')' && --depth == 0) return l.i + 1;
            ++l.i;
        }
        return std::string::npos;
    }
};

std::string trim(const std::string& t) {
    size_t a = t.find_first_not_of(" \t\r\n\\"), b = t.find_last_not_of(" \t\r\n\\");
    return a == std::string::npos ? "" : t.substr(a, b - a + 1);
}

// Splits `t` at top-level commas.
std::vector<std::string> split_commas(const std::string& t) {
    std::vector<std::string> parts;
    Lexer l(t);
    int depth = 0;
    size_t start = 0;
    while (l.i < t.size()) {
        char c = t[l.i];
        if (c == '"' || c == '\'') { l.skip_literal(); continue; }
        if (c == '(' || c == '[' || c == '{') ++depth;
        if (c == ')' || c == ']' || c == '}') --depth;
        if (c == ',' && depth == 0) {
            parts.push_back(t.substr(start, l.i - start));
            start = l.i + 1;
        }
        ++l.i;
    }
    if (trim(t.substr(start)).size() || !parts.empty()) parts.push_back(t.substr(start));
    return parts;
}

// The operands `"=f"(x), "h"(y)` of one asm section: their expressions.
bool asm_operands(const std::string& section, std::vector<std::string>& exprs) {
    for (auto& part : split_commas(section)) {
        std::string p = trim(part);
        if (p.empty()) continue;
        if (p[0] == '[') return false;  // named operands: not supported
        Lexer l(p);
        if (p[0] != '"') return false;
        l.skip_literal();
        l.skip_space();
        if (l.i >= p.size() || p[l.i] != '(') return false;
        size_t close = l.match_paren(l.i);
        if (close == std::string::npos) return false;
        exprs.push_back("(" + p.substr(l.i + 1, close - l.i - 2) + ")");
    }
    return true;
}

// The C++ for one asm statement's contents (between its parentheses), or a static_assert naming what is not
// emulated.
std::string translate_asm(const std::string& body) {
    // Sections separated by top-level ':'.
    std::vector<std::string> sections;
    {
        Lexer l(body);
        int depth = 0;
        size_t start = 0;
        while (l.i < body.size()) {
            char c = body[l.i];
            if (c == '"' || c == '\'') { l.skip_literal(); continue; }
            if (c == '(') ++depth;
            if (c == ')') --depth;
            if (c == ':' && depth == 0) {
                if (l.i + 1 < body.size() && body[l.i + 1] == ':' ) {  // "::" separates two empty sections
                    sections.push_back(body.substr(start, l.i - start));
                    sections.push_back("");
                    start = l.i + 2;
                    l.i += 2;
                    continue;
                }
                sections.push_back(body.substr(start, l.i - start));
                start = l.i + 1;
            }
            ++l.i;
        }
        sections.push_back(body.substr(start));
    }
    std::string templ;
    {
        Lexer l(sections[0]);
        for (;;) {
            l.skip_space();
            if (l.i >= sections[0].size()) break;
            if (sections[0][l.i] != '"') return "";
            l.skip_literal(&templ);
        }
    }
    auto unsupported = [&](const char* why) {
        std::string t;
        for (char c : templ) t += c == '\n' ? ' ' : c == '\t' ? ' ' : c == '"' ? '\'' : c == '\\' ? '/' : c;
        return std::string("static_assert(sizeof(int) == 0, \"frugal emulated CUDA: inline PTX '") + t + "' is not "
               "emulated (" + why + ")\")";
    };
    std::vector<std::string> operands;
    for (size_t k = 1; k < sections.size() && k <= 2; ++k)
        if (!asm_operands(sections[k], operands)) return unsupported("operand syntax");
    // One instruction: "mnemonic a, b, c;".
    std::string t = trim(templ);
    while (!t.empty() && (t.back() == ';' || t.back() == ' ' || t.back() == '\n' || t.back() == '\t')) t.pop_back();
    if (t.find(';') != std::string::npos || t.find('{') != std::string::npos || t.find('@') != std::string::npos)
        return unsupported("only single instructions are");
    size_t sp = t.find_first_of(" \t");
    std::string mnemonic = t.substr(0, sp), rest = sp == std::string::npos ? "" : t.substr(sp + 1);
    std::string fn;
    for (char c : mnemonic) {
        if (c == '.') fn += '_';
        else if (Lexer::ident_char(c)) fn += c;
        else return unsupported("mnemonic");
    }
    std::string args;
    for (auto& raw : split_commas(rest)) {
        std::string a = trim(raw);
        if (a.empty()) continue;
        std::string arg;
        if (a.size() >= 2 && a[0] == '%' && a[1] == '%') {
            std::string reg;
            for (char c : a.substr(2)) reg += c == '.' ? '_' : c;
            arg = "::frugal_emu_ptx::sreg_" + reg + "()";
        } else if (a[0] == '%') {
            char* end = nullptr;
            long k = strtol(a.c_str() + 1, &end, 10);
            if (*end || k < 0 || (size_t)k >= operands.size()) return unsupported("operand reference");
            arg = operands[(size_t)k];
        } else if ((a[0] >= '0' && a[0] <= '9') || a[0] == '-') {
            arg = a;
        } else {
            return unsupported("operand");
        }
        args += (args.empty() ? "" : ", ") + arg;
    }
    return "::frugal_emu_ptx::" + fn + "(" + args + ")";
}

// Rewrites inline PTX (asm statements) and dynamic shared memory declarations (`extern __shared__ T name[];`)
// into what the prelude implements. Records in `notes` what it rewrote.
std::string rewrite(const std::string& s, std::vector<std::string>& notes) {
    std::string out;
    Lexer l(s);
    size_t copied = 0;
    // Brace scopes: true where inside a function body.
    std::vector<bool> scopes;
    char last = 0;  // last significant character
    std::string last_ident;
    while (l.i < s.size()) {
        size_t before = l.i;
        l.skip_space();
        if (l.i != before) continue;
        char c = s[l.i];
        if (c == '"' || c == '\'') {
            // raw strings R"d(...)d": skip to the closing delimiter
            if (c == '"' && l.i > 0 && s[l.i - 1] == 'R') {
                size_t open = s.find('(', l.i);
                if (open != std::string::npos) {
                    std::string delim = ")" + s.substr(l.i + 1, open - l.i - 1) + "\"";
                    size_t e = s.find(delim, open);
                    l.i = e == std::string::npos ? s.size() : e + delim.size();
                    last = '"';
                    continue;
                }
            }
            l.skip_literal();
            last = '"';
            continue;
        }
        if (c == '#') {  // a preprocessor line: keep as is (but look inside for asm? no: skip to its end)
            // Only skip the directive name so that macro bodies are still scanned.
            ++l.i;
            last = '#';
            continue;
        }
        if (c == '{') {
            bool in_fn = (!scopes.empty() && scopes.back()) || last == ')' || last_ident == "const" ||
                         last_ident == "noexcept" || last_ident == "override" || last_ident == "final" ||
                         last_ident == "mutable";
            scopes.push_back(in_fn);
            ++l.i;
            last = c;
            last_ident.clear();
            continue;
        }
        if (c == '}') {
            if (!scopes.empty()) scopes.pop_back();
            ++l.i;
            last = c;
            last_ident.clear();
            continue;
        }
        if (Lexer::ident_start(c) && (l.i == 0 || !Lexer::ident_char(s[l.i - 1]))) {
            size_t start = l.i;
            while (l.i < s.size() && Lexer::ident_char(s[l.i])) ++l.i;
            std::string id = s.substr(start, l.i - start);
            if (id == "asm" || id == "__asm__" || id == "__asm") {
                Lexer k(s);
                k.i = l.i;
                for (;;) {
                    k.skip_space();
                    size_t q = k.i;
                    while (k.i < s.size() && Lexer::ident_char(s[k.i])) ++k.i;
                    std::string w = s.substr(q, k.i - q);
                    if (w.empty()) break;
                    if (w != "volatile" && w != "__volatile__" && w != "inline" && w != "goto") { k.i = q; break; }
                }
                if (k.i < s.size() && s[k.i] == '(') {
                    size_t close = k.match_paren(k.i);
                    if (close != std::string::npos) {
                        std::string body = s.substr(k.i + 1, close - k.i - 2);
                        std::string cpp = translate_asm(body);
                        if (!cpp.empty()) {
                            out += s.substr(copied, start - copied);
                            out += cpp;
                            copied = close;
                            l.i = close;
                            notes.push_back(cpp);
                            last = ')';
                            last_ident.clear();
                            continue;
                        }
                    }
                }
            } else if (id == "extern") {
                Lexer k(s);
                k.i = l.i;
                k.skip_space();
                if (s.compare(k.i, 10, "__shared__") == 0 && (k.i + 10 >= s.size() || !Lexer::ident_char(s[k.i + 10]))) {
                    k.i += 10;
                    k.skip_space();
                    std::string align;
                    if (s.compare(k.i, 9, "__align__") == 0) {
                        size_t open = s.find('(', k.i);
                        size_t close = open == std::string::npos ? open : k.match_paren(open);
                        if (close != std::string::npos) {
                            align = s.substr(k.i, close - k.i);
                            k.i = close;
                        }
                    }
                    size_t semi = s.find(';', k.i);
                    if (semi != std::string::npos) {
                        std::string decl = trim(s.substr(k.i, semi - k.i));
                        // "<type> <name> [ ]"
                        size_t rb = decl.find_last_not_of(" \t\r\n");
                        if (rb != std::string::npos && decl[rb] == ']') {
                            size_t lb = decl.find_last_of('[', rb);
                            if (lb != std::string::npos && trim(decl.substr(lb + 1, rb - lb - 1)).empty()) {
                                std::string head = trim(decl.substr(0, lb));
                                size_t ne = head.size(), ns = ne;
                                while (ns > 0 && Lexer::ident_char(head[ns - 1])) --ns;
                                std::string name = head.substr(ns), type = trim(head.substr(0, ns));
                                if (!name.empty() && !type.empty()) {
                                    bool in_fn = !scopes.empty() && scopes.back();
                                    std::string cpp;
                                    if (in_fn)
                                        cpp = type + "* const " + name + " = (" + type +
                                              "*)::frugal_emu::dynamic_shared();";
                                    else
                                        cpp = "\n#undef " + name + "\n#define " + name + " ((" + type +
                                              "*)::frugal_emu::dynamic_shared())\n";
                                    out += s.substr(copied, start - copied);
                                    out += cpp;
                                    copied = semi + 1;
                                    l.i = semi + 1;
                                    notes.push_back("extern __shared__ " + name);
                                    last = ';';
                                    last_ident.clear();
                                    continue;
                                }
                            }
                        }
                    }
                }
            }
            last_ident = id;
            last = 'a';
            continue;
        }
        last = c;
        if (c != ' ') last_ident.clear();
        ++l.i;
    }
    out += s.substr(copied);
    return out;
}

// ---- finding the kernels in preprocessed text ----
std::vector<std::string> tokenize(const std::string& s) {
    std::vector<std::string> toks;
    Lexer l(s);
    while (l.i < s.size()) {
        l.skip_space();
        if (l.i >= s.size()) break;
        char c = s[l.i];
        if (c == '"' || c == '\'') {
            size_t a = l.i;
            l.skip_literal();
            toks.push_back(s.substr(a, l.i - a));
        } else if (Lexer::ident_char(c)) {
            size_t a = l.i;
            while (l.i < s.size() && Lexer::ident_char(s[l.i])) ++l.i;
            toks.push_back(s.substr(a, l.i - a));
        } else if (c == ':' && l.i + 1 < s.size() && s[l.i + 1] == ':') {
            toks.push_back("::");
            l.i += 2;
        } else {
            toks.push_back(std::string(1, c));
            ++l.i;
        }
    }
    return toks;
}

// The names of the __global__ functions defined (not only declared) outside templates and namespaces.
std::vector<std::string> find_kernels(const std::string& pre, std::vector<std::string>& skipped) {
    std::vector<std::string> toks = tokenize(pre);
    std::vector<std::string> names;
    std::set<std::string> seen;
    // Scopes: 'n' namespace, 'o' other (extern "C", class, function).
    std::vector<char> scopes;
    for (size_t i = 0; i < toks.size(); ++i) {
        const std::string& t = toks[i];
        if (t == "{") {
            bool ns = false;
            for (size_t j = i; j-- > 0 && i - j <= 3;) {
                if (toks[j] == "namespace") { ns = true; break; }
                if (toks[j] == ";" || toks[j] == "}" || toks[j] == "{" || toks[j] == ")") break;
            }
            scopes.push_back(ns ? 'n' : 'o');
            continue;
        }
        if (t == "}") {
            if (!scopes.empty()) scopes.pop_back();
            continue;
        }
        if (t != "__global__") continue;
        // template<...> before it (back to the previous ; { }) means a template kernel: not registered.
        bool templ = false;
        for (size_t j = i; j-- > 0;) {
            if (toks[j] == ";" || toks[j] == "{" || toks[j] == "}") break;
            if (toks[j] == "template") { templ = true; break; }
        }
        size_t j = i + 1;
        int angle = 0;
        while (j < toks.size() && !(toks[j] == "(" && angle == 0) && toks[j] != ";" && toks[j] != "{") {
            if (toks[j] == "<") ++angle;
            if (toks[j] == ">") --angle;
            ++j;
        }
        if (j >= toks.size() || toks[j] != "(" || j == i + 1) continue;
        std::string name = toks[j - 1];
        if (!Lexer::ident_start(name[0])) continue;
        // Past the parameter list: a definition has '{' before ';'.
        int depth = 0;
        size_t k = j;
        for (; k < toks.size(); ++k) {
            if (toks[k] == "(") ++depth;
            if (toks[k] == ")" && --depth == 0) break;
        }
        bool definition = false;
        for (++k; k < toks.size(); ++k) {
            if (toks[k] == "{") { definition = true; break; }
            if (toks[k] == ";" || toks[k] == "=") break;
        }
        if (!definition) continue;
        bool in_ns = false;
        for (char sc : scopes) in_ns |= sc == 'n';
        if (templ || in_ns || toks[j - 2] == "::") {
            skipped.push_back(name);
            continue;
        }
        if (seen.insert(name).second) names.push_back(name);
    }
    return names;
}

// A relative path without ".." components.
bool safe_relative(const std::string& p) {
    if (p.empty() || p[0] == '/') return false;
    size_t a = 0;
    while (a <= p.size()) {
        size_t b = p.find('/', a);
        if (b == std::string::npos) b = p.size();
        std::string part = p.substr(a, b - a);
        if (part == ".." || part.empty()) return false;
        a = b + 1;
    }
    return true;
}

bool make_parents(const std::string& root, const std::string& rel) {
    size_t a = 0;
    for (;;) {
        size_t b = rel.find('/', a);
        if (b == std::string::npos) return true;
        std::string dir = root + "/" + rel.substr(0, b);
        if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return false;
        a = b + 1;
    }
}

std::string join(const std::vector<std::string>& args) {
    std::string s;
    for (auto& a : args) s += (s.empty() ? "" : " ") + a;
    return s;
}

// The host compilation. Returns NVRTC_SUCCESS with the module in `cubin`, or an error with `log`.
nvrtcResult host_compile(_nvrtcProgram& p, const std::vector<std::string>& options, std::string& cubin,
                         std::string& log) {
    const char* cxx_env = getenv("FRUGAL_EMU_CXX");
    std::string cxx = cxx_env && *cxx_env ? cxx_env : "g++";
    std::string pdir = prelude_dir();
    std::string prelude = pdir + "/frugal_emu_cuda.h";
    if (access(prelude.c_str(), R_OK) != 0) {
        log += "frugal emulated NVRTC: the CUDA prelude " + prelude + " is missing (it is installed next to "
               "lib64/libnvrtc.so.12 as include/frugal_emu_cuda.h)\n";
        return NVRTC_ERROR_COMPILATION;
    }
    // Options: -D, -U, -I, -include pass through; the architecture sets __CUDA_ARCH__; the rest is NVRTC's.
    std::vector<std::string> pass, pre_includes;
    std::string std_flag = "-std=c++17";
    int arch = 520;
    for (size_t i = 0; i < options.size(); ++i) {
        const std::string& o = options[i];
        auto value = [&](const std::string& longname, const std::string& shortname, std::string& v) {
            for (const std::string& n : {longname, shortname}) {
                if (n.empty()) continue;
                if (o.compare(0, n.size() + 1, n + "=") == 0) { v = o.substr(n.size() + 1); return true; }
                if (o == n && i + 1 < options.size()) { v = options[++i]; return true; }
            }
            return false;
        };
        std::string v;
        if (o.size() > 2 && (o.compare(0, 2, "-D") == 0 || o.compare(0, 2, "-U") == 0 || o.compare(0, 2, "-I") == 0) &&
            o[2] != '-') {
            pass.push_back(o);
        } else if (value("--define-macro", "", v)) {
            pass.push_back("-D" + v);
        } else if (value("--undefine-macro", "", v)) {
            pass.push_back("-U" + v);
        } else if (value("--include-path", "", v)) {
            pass.push_back("-I" + v);
        } else if (value("--pre-include", "-include", v)) {
            pre_includes.push_back("-include");
            pre_includes.push_back(v);
        } else if (value("--gpu-architecture", "-arch", v)) {
            size_t u = v.find('_');
            if (u != std::string::npos) {
                int a = atoi(v.c_str() + u + 1);
                if (a > 0) arch = a * 10;
            }
        } else if (o.compare(0, 5, "-std=") == 0 || o.compare(0, 6, "--std=") == 0) {
            std::string s = o.substr(o.find('=') + 1);
            if (s == "c++20" || s == "c++2a") std_flag = "-std=c++20";
        }
        // Others (-G, -lineinfo, --use_fast_math, --fmad, -dopt, -maxrregcount, --device-debug, ...) do not
        // change what the host build means.
    }

    char tmpl[4096];
    const char* tmpdir = getenv("TMPDIR");
    snprintf(tmpl, sizeof tmpl, "%s/frugal-nvrtc-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (!mkdtemp(tmpl)) {
        log += std::string("frugal emulated NVRTC: mkdtemp(") + tmpl + "): " + strerror(errno) + "\n";
        return NVRTC_ERROR_INTERNAL_ERROR;
    }
    std::string dir = tmpl;
    struct Cleanup {
        std::string d;
        ~Cleanup() { remove_tree(d); }
    } cleanup{dir};

    std::vector<std::string> notes;
    std::set<std::string> written;
    for (auto& h : p.headers) {
        if (!safe_relative(h.first)) {
            log += "frugal emulated NVRTC: header include name '" + h.first + "' is not a relative path without "
                   "'..': not supported by the host build\n";
            return NVRTC_ERROR_COMPILATION;
        }
        if (!make_parents(dir, h.first) || !write_file(dir + "/" + h.first, rewrite(h.second, notes))) {
            log += "frugal emulated NVRTC: cannot write " + dir + "/" + h.first + "\n";
            return NVRTC_ERROR_INTERNAL_ERROR;
        }
        written.insert(h.first);
    }
    std::string src_name;
    for (char c : p.name) src_name += (Lexer::ident_char(c) || c == '.' || c == '-') ? c : '_';
    if (src_name.empty() || src_name[0] == '.') src_name = "program" + src_name;
    while (written.count(src_name) || src_name == "frugal_emu_module.cpp") src_name = "_" + src_name;
    if (!write_file(dir + "/" + src_name, rewrite(p.source, notes))) {
        log += "frugal emulated NVRTC: cannot write " + dir + "/" + src_name + "\n";
        return NVRTC_ERROR_INTERNAL_ERROR;
    }

    std::vector<std::string> common = {"-D", "FRUGAL_EMULATED_CUDA=1", "-D__CUDA_ARCH__=" + std::to_string(arch),
                                       "-I" + dir, "-I" + pdir};
    common.insert(common.end(), pass.begin(), pass.end());

    // 1. Preprocess with __global__ kept, to find the kernels.
    std::vector<std::string> scan = {cxx, "-E", "-P", std_flag, "-D", "FRUGAL_EMU_SCAN=1"};
    scan.insert(scan.end(), common.begin(), common.end());
    scan.insert(scan.end(), {"-include", prelude});
    scan.insert(scan.end(), pre_includes.begin(), pre_includes.end());
    scan.insert(scan.end(), {"-x", "c++", dir + "/" + src_name, "-o", dir + "/scan.ii"});
    std::string out;
    int rc = run(scan, out);
    std::string pre;
    if (rc != 0 || !read_file(dir + "/scan.ii", pre)) {
        log += "frugal emulated NVRTC: the host preprocessing failed (" + join(scan) + "):\n" + out + "\n";
        return NVRTC_ERROR_COMPILATION;
    }
    std::vector<std::string> skipped;
    std::vector<std::string> kernels = find_kernels(pre, skipped);

    // 2. Compile source and footer into a shared object.
    std::string wrapper = "#include \"" + src_name + "\"\n\n// ---- registration (generated) ----\n";
    if (kernels.empty()) {
        wrapper += "FRUGAL_EMU_EMPTY_MODULE\n";
    } else {
        wrapper += "FRUGAL_EMU_MODULE(\n";
        for (size_t i = 0; i < kernels.size(); ++i)
            wrapper += "    FRUGAL_EMU_KERNEL(" + kernels[i] + ")" + (i + 1 < kernels.size() ? ",\n" : "\n");
        wrapper += ")\n";
    }
    if (!write_file(dir + "/frugal_emu_module.cpp", wrapper)) {
        log += "frugal emulated NVRTC: cannot write the module footer\n";
        return NVRTC_ERROR_INTERNAL_ERROR;
    }
    std::vector<std::string> build = {cxx, std_flag, "-O2", "-fPIC", "-shared", "-fno-math-errno", "-g0",
                                      "-Wl,-z,defs"};
    build.insert(build.end(), common.begin(), common.end());
    build.insert(build.end(), {"-include", prelude});
    build.insert(build.end(), pre_includes.begin(), pre_includes.end());
    build.insert(build.end(), {"-x", "c++", dir + "/frugal_emu_module.cpp", "-x", "none",
                               "-o", dir + "/module.so", "-ldl", "-lpthread"});
    out.clear();
    rc = run(build, out);
    if (rc != 0 || !read_file(dir + "/module.so", cubin)) {
        log += "frugal emulated NVRTC: the real NVRTC accepted the program, but the host compilation failed (" +
               join(build) + "):\n" + out + "\n";
        if (!notes.empty()) {
            log += "note: rewritten for the host:";
            for (auto& n : notes) log += "\n  " + n;
            log += "\n";
        }
        return NVRTC_ERROR_COMPILATION;
    }
    if (!skipped.empty()) {
        std::string s;
        for (auto& k : skipped) s += (s.empty() ? "" : ", ") + k;
        log += "frugal emulated NVRTC: warning: __global__ templates and kernels in namespaces are not registered "
               "in the emulated module: " + s + "\n";
    }
    return NVRTC_SUCCESS;
}

const char* error_string(nvrtcResult r) {
    switch (r) {
        case NVRTC_SUCCESS: return "NVRTC_SUCCESS";
        case NVRTC_ERROR_OUT_OF_MEMORY: return "NVRTC_ERROR_OUT_OF_MEMORY";
        case NVRTC_ERROR_PROGRAM_CREATION_FAILURE: return "NVRTC_ERROR_PROGRAM_CREATION_FAILURE";
        case NVRTC_ERROR_INVALID_INPUT: return "NVRTC_ERROR_INVALID_INPUT";
        case NVRTC_ERROR_INVALID_PROGRAM: return "NVRTC_ERROR_INVALID_PROGRAM";
        case NVRTC_ERROR_INVALID_OPTION: return "NVRTC_ERROR_INVALID_OPTION";
        case NVRTC_ERROR_COMPILATION: return "NVRTC_ERROR_COMPILATION";
        case NVRTC_ERROR_BUILTIN_OPERATION_FAILURE: return "NVRTC_ERROR_BUILTIN_OPERATION_FAILURE";
        case NVRTC_ERROR_NO_NAME_EXPRESSIONS_AFTER_COMPILATION: return "NVRTC_ERROR_NO_NAME_EXPRESSIONS_AFTER_COMPILATION";
        case NVRTC_ERROR_NO_LOWERED_NAMES_BEFORE_COMPILATION: return "NVRTC_ERROR_NO_LOWERED_NAMES_BEFORE_COMPILATION";
        case NVRTC_ERROR_NAME_EXPRESSION_NOT_VALID: return "NVRTC_ERROR_NAME_EXPRESSION_NOT_VALID";
        case NVRTC_ERROR_INTERNAL_ERROR: return "NVRTC_ERROR_INTERNAL_ERROR";
    }
    return "NVRTC_ERROR unknown";
}

}  // namespace

EXPORT const char* nvrtcGetErrorString(nvrtcResult result) { return error_string(result); }

EXPORT nvrtcResult nvrtcVersion(int* major, int* minor) {
    if (!major || !minor) return NVRTC_ERROR_INVALID_INPUT;
    Real& r = real();
    if (r.handle) {
        *major = r.major;
        *minor = r.minor;
    } else {
        *major = 11;
        *minor = 8;
    }
    return NVRTC_SUCCESS;
}

EXPORT nvrtcResult nvrtcCreateProgram(nvrtcProgram* prog, const char* src, const char* name, int numHeaders,
                                      const char* const* headers, const char* const* includeNames) {
    if (!prog || !src || numHeaders < 0 || (numHeaders > 0 && (!headers || !includeNames)))
        return NVRTC_ERROR_INVALID_INPUT;
    std::shared_ptr<_nvrtcProgram> p;
    try {
        p = std::make_shared<_nvrtcProgram>();
        p->source = src;
        p->name = name && *name ? name : "default_program";
        for (int i = 0; i < numHeaders; ++i) {
            if (!includeNames[i]) return NVRTC_ERROR_INVALID_INPUT;
            // A NULL header text: NVRTC then looks the header up on the include paths; so does g++.
            if (headers[i]) p->headers.emplace_back(includeNames[i], headers[i]);
        }
        std::lock_guard<std::mutex> g(g_lock);
        g_programs[p.get()] = p;
    } catch (...) {
        return NVRTC_ERROR_OUT_OF_MEMORY;
    }
    *prog = p.get();
    return NVRTC_SUCCESS;
}

EXPORT nvrtcResult nvrtcDestroyProgram(nvrtcProgram* prog) {
    if (!prog) return NVRTC_ERROR_INVALID_INPUT;
    std::shared_ptr<_nvrtcProgram> p;
    {
        std::lock_guard<std::mutex> g(g_lock);
        auto it = g_programs.find(*prog);
        if (it == g_programs.end()) return NVRTC_ERROR_INVALID_PROGRAM;
        p = it->second;
        g_programs.erase(it);
    }
    *prog = nullptr;
    return NVRTC_SUCCESS;  // freed when the last user (a compilation in flight) lets go
}

EXPORT nvrtcResult nvrtcCompileProgram(nvrtcProgram prog, int numOptions, const char* const* options) {
    auto p = find(prog);
    if (!p) return NVRTC_ERROR_INVALID_PROGRAM;
    if (numOptions < 0 || (numOptions > 0 && !options)) return NVRTC_ERROR_INVALID_INPUT;
    std::lock_guard<std::mutex> g(p->lock);
    try {
        std::vector<std::string> opts;
        for (int i = 0; i < numOptions; ++i) {
            if (!options[i]) return NVRTC_ERROR_INVALID_INPUT;
            opts.push_back(options[i]);
        }
        p->log.clear();
        p->cubin.clear();
        p->compiled = false;

        // 1. The real NVRTC: its verdict and diagnostics come first.
        Real& r = real();
        if (!r.handle) {
            p->log = "frugal emulated NVRTC: " + r.error + "\n";
            return NVRTC_ERROR_COMPILATION;
        }
        std::vector<const char*> hs, ns, os;
        for (auto& h : p->headers) {
            hs.push_back(h.second.c_str());
            ns.push_back(h.first.c_str());
        }
        for (auto& o : opts) os.push_back(o.c_str());
        nvrtcProgram rp = nullptr;
        nvrtcResult res = r.create(&rp, p->source.c_str(), p->name.c_str(), (int)hs.size(), hs.data(), ns.data());
        if (res != NVRTC_SUCCESS) {
            p->log = "frugal emulated NVRTC: the real NVRTC " + std::to_string(r.major) + "." +
                     std::to_string(r.minor) + " could not create the program: " + r.error_string(res) + "\n";
            return res;
        }
        res = r.compile(rp, (int)os.size(), os.data());
        std::string real_log;
        size_t size = 0;
        if (r.log_size(rp, &size) == NVRTC_SUCCESS && size > 1) {
            real_log.resize(size);
            if (r.log(rp, &real_log[0]) == NVRTC_SUCCESS)
                real_log.resize(strlen(real_log.c_str()));
            else
                real_log.clear();
        }
        r.destroy(&rp);
        if (res != NVRTC_SUCCESS) {
            p->log = "frugal emulated NVRTC: the real NVRTC " + std::to_string(r.major) + "." +
                     std::to_string(r.minor) + " (" + r.path + ") rejected the program (" + r.error_string(res) +
                     "):\n" + real_log;
            return res;
        }
        p->log = real_log;

        // 2. The host build.
        std::string cubin, log;
        res = host_compile(*p, opts, cubin, log);
        p->log += log;
        if (res != NVRTC_SUCCESS) return res;
        p->cubin = std::move(cubin);
        p->compiled = true;
        return NVRTC_SUCCESS;
    } catch (const std::bad_alloc&) {
        return NVRTC_ERROR_OUT_OF_MEMORY;
    } catch (...) {
        return NVRTC_ERROR_INTERNAL_ERROR;
    }
}

EXPORT nvrtcResult nvrtcGetProgramLogSize(nvrtcProgram prog, size_t* logSizeRet) {
    auto p = find(prog);
    if (!p) return NVRTC_ERROR_INVALID_PROGRAM;
    if (!logSizeRet) return NVRTC_ERROR_INVALID_INPUT;
    std::lock_guard<std::mutex> g(p->lock);
    *logSizeRet = p->log.size() + 1;
    return NVRTC_SUCCESS;
}

EXPORT nvrtcResult nvrtcGetProgramLog(nvrtcProgram prog, char* log) {
    auto p = find(prog);
    if (!p) return NVRTC_ERROR_INVALID_PROGRAM;
    if (!log) return NVRTC_ERROR_INVALID_INPUT;
    std::lock_guard<std::mutex> g(p->lock);
    memcpy(log, p->log.c_str(), p->log.size() + 1);
    return NVRTC_SUCCESS;
}

EXPORT nvrtcResult nvrtcGetCUBINSize(nvrtcProgram prog, size_t* cubinSizeRet) {
    auto p = find(prog);
    if (!p) return NVRTC_ERROR_INVALID_PROGRAM;
    if (!cubinSizeRet) return NVRTC_ERROR_INVALID_INPUT;
    std::lock_guard<std::mutex> g(p->lock);
    if (!p->compiled) return NVRTC_ERROR_INVALID_INPUT;
    *cubinSizeRet = p->cubin.size();
    return NVRTC_SUCCESS;
}

EXPORT nvrtcResult nvrtcGetCUBIN(nvrtcProgram prog, char* cubin) {
    auto p = find(prog);
    if (!p) return NVRTC_ERROR_INVALID_PROGRAM;
    if (!cubin) return NVRTC_ERROR_INVALID_INPUT;
    std::lock_guard<std::mutex> g(p->lock);
    if (!p->compiled) return NVRTC_ERROR_INVALID_INPUT;
    memcpy(cubin, p->cubin.data(), p->cubin.size());
    return NVRTC_SUCCESS;
}

// The emulated device runs host code: there is no PTX. The log says so.
EXPORT nvrtcResult nvrtcGetPTXSize(nvrtcProgram prog, size_t* ptxSizeRet) {
    auto p = find(prog);
    if (!p) return NVRTC_ERROR_INVALID_PROGRAM;
    if (ptxSizeRet) *ptxSizeRet = 0;
    std::lock_guard<std::mutex> g(p->lock);
    const char* note = "frugal emulated NVRTC: no PTX: the emulated device's \"CUBIN\" is a host shared object\n";
    if (p->log.find(note) == std::string::npos) p->log += note;
    return NVRTC_ERROR_INVALID_INPUT;
}

EXPORT nvrtcResult nvrtcGetPTX(nvrtcProgram prog, char* ptx) {
    size_t unused;
    (void)ptx;
    return nvrtcGetPTXSize(prog, &unused);
}

EXPORT nvrtcResult nvrtcGetNumSupportedArchs(int* numArchs) {
    if (!numArchs) return NVRTC_ERROR_INVALID_INPUT;
    *numArchs = 1;
    return NVRTC_SUCCESS;
}

EXPORT nvrtcResult nvrtcGetSupportedArchs(int* supportedArchs) {
    if (!supportedArchs) return NVRTC_ERROR_INVALID_INPUT;
    supportedArchs[0] = 90;
    return NVRTC_SUCCESS;
}
