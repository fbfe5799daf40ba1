#!/usr/bin/env bash
# check-elf.sh ELF: the static checks every user program must pass (run by the Makefile).
#   - no SSE/AVX/x87/MMX instruction (the harness machine has none)
#   - ELF64 executable, entry point 0x400000 (crt0's _start at the start of .text)
#   - every PT_LOAD starts on a page boundary in memory and in the file, at or above 0x400000
#     and below the user stack
set -euo pipefail
elf="$1"
fail() { echo "check-elf.sh: $elf: $*" >&2; exit 1; }

bad=$(objdump -d --no-show-raw-insn "$elf" | awk -F'\t' 'NF >= 2 { print $2 }' \
      | grep -E '^(f[a-z0-9]*|emms|ldmxcsr|stmxcsr|fxsave|fxrstor|xsave|xrstor|v?movaps|v?movups|v?movdq|v?pxor|v?movq[[:space:]]+%x)|%[xyz]mm|%mm[0-7]|%st\b' \
      || true)
[ -z "$bad" ] || fail "SSE/x87 instructions:
$bad"

hdr=$(readelf -hW "$elf")
grep -Eq 'Class:[[:space:]]+ELF64' <<<"$hdr" || fail "not ELF64"
grep -Eq 'Type:[[:space:]]+EXEC' <<<"$hdr" || fail "not a static executable (ET_EXEC)"
grep -Eq 'Entry point address:[[:space:]]+0x400000$' <<<"$hdr" || fail "entry point is not 0x400000"

phdrs=$(readelf -lW "$elf")
if grep -Eq '^[[:space:]]+(INTERP|DYNAMIC)[[:space:]]' <<<"$phdrs"; then fail "not static"; fi
loads=0
while read -r type off va pa fsz msz rest; do
    [ "$type" = LOAD ] || continue
    loads=$((loads + 1))
    if (( off % 4096 != 0 || va % 4096 != 0 )); then fail "PT_LOAD not page-aligned: $type $off $va"; fi
    if (( va < 0x400000 || va + msz > 0x7FFF00000000 )); then fail "PT_LOAD outside the user image range: $va + $msz"; fi
    if (( fsz > msz )); then fail "PT_LOAD filesz > memsz: $fsz $msz"; fi
done <<<"$phdrs"
[ "$loads" -gt 0 ] || fail "no PT_LOAD"
