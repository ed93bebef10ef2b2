// Package rulefile loads and validates Outcall rule files (S003-IF-012):
// everything of loading except CEL, which package rules compiles from the
// conditions produced here.
//
// # Format
//
//	version: "1"                 # required; only "1" (quoted or not)
//	definitions:                 # optional; file-scoped name -> CEL snippet
//	  is_github: network.hostname == "github.com"
//	rules:                       # optional; default empty
//	  - id: allow-github-api     # required; unique across all files
//	    condition: $is_github && http.method == "GET"   # required CEL text
//	    action: allow            # required: allow or block
//	    priority: 10             # optional; default 100; lower runs first
//	    log: true                # optional
//	    description: ...         # optional
//	    egress:                  # optional; allow rules only
//	      mode: direct_ip        # proxy or direct_ip
//	      ports: [443]           # direct_ip only; default [80, 443]
//	      allow_private_ips: false
//
// Decoding is strict: unknown fields, duplicate keys, wrong YAML types,
// YAML aliases and more than one YAML document are errors. `action: enrich`
// and an `enrich` key anywhere get their own error: enrich is reserved
// (S003-FR-041). `egress.mode: intercept` is not implemented.
//
// # Order
//
// A directory's files load in byte-wise name order (LoadDir; Build takes
// them already in that order); rules evaluate by priority ascending, then
// file, then position in the file.
//
// # Definitions
//
// $name, where name is the longest run of [A-Za-z0-9_] after the $ and
// starts with a letter or _, is replaced by "(" + the fully expanded
// definition + ")", in conditions and in other definitions. References
// inside CEL string literals (all quote forms, raw and bytes prefixes) and
// // comments are left alone, as is a $ not followed by a name. Undefined
// names and cycles are errors, whether or not the definition is used. A
// definition not reachable from any rule condition of its file is warned
// about; a file with definitions but no rules gets one warning instead of
// one per definition.
//
// # Decisions
//
//   - `version: 1` (an unquoted YAML integer) is accepted like "1"; any
//     other value names the unsupported version. An empty file, or one
//     holding only comments, is an error: missing version.
//   - Rule IDs match [A-Za-z0-9][A-Za-z0-9._:-]{0,127}: they appear in logs,
//     metric labels and CLI output. Definition names match
//     [A-Za-z_][A-Za-z0-9_]*.
//   - A condition or definition may be any plain YAML scalar and is taken
//     as written (`condition: true`). Other fields are typed: `log: "yes"`
//     or `priority: high` are errors. A null optional field is absent.
//   - priority is between MinPriority and MaxPriority.
//   - Directory scan: only *.yaml and *.yml names (case-sensitive), not
//     hidden (dotfiles skipped: editor swap and lock files), non-recursive;
//     sub-directories are skipped, symlinks followed. Any other file is
//     ignored silently. A rule file that cannot be read or is not a regular
//     file (FIFO, device, dangling symlink) is an error, because dropping it
//     could drop a block rule.
//   - Limits, each reported by name: MaxFileSize (1 MiB per file),
//     MaxConditionSize (64 KiB as written), MaxExpandedSize (256 KiB after
//     expansion, checked while expanding), MaxExpandedFileSize (8 MiB of
//     expansion per file), MaxDescriptionSize (4 KiB, no control
//     characters).
//   - Errors are *Error values naming file, line, rule and field where
//     known; the first error wins and nothing partial is returned.
package rulefile
