using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;
using Harness.Dbt.Cache;

namespace Harness.Dbt.Indirect;

/// <summary>
/// The shared level-2 jumptable routine and its entries: one per frame an inline level-1 lookup
/// (<see cref="Translate.JumpTableLookup"/>) leaves on a miss. Every entry rearranges its frame into
/// the probe's and jumps there, so the probe and the miss vmcall are the same for all of them and
/// the dispatcher sees one stack contract.
/// </summary>
public sealed class JumpTableLevel2
{
    /// <summary>The probe, for the stack form's frame [rbx, rax, flags, target], RAX = target.</summary>
    public ulong Probe { get; }
    /// <summary>The memory form's entry: frame [rbx, flags, rax], RAX = target, RBX clobbered.</summary>
    public ulong MemoryEntry { get; }
    /// <summary>The vmcall a level-2 miss enters the dispatcher through (stack [flags, target]).</summary>
    public ulong MissVmcall { get; }
    /// <summary>
    /// A hit's final "ret" to tx, after the popfq that may turn interrupts back on: the routine's one
    /// interrupt window. An interrupt there leaves a frame whose RIP is this address and whose stack
    /// holds tx (recovered by rolling forward to tx, like the inline lookup's final ret).
    /// </summary>
    public ulong HitReturn { get; }
    private readonly ulong[] registerEntries;

    internal JumpTableLevel2(ulong probe, ulong memoryEntry, ulong[] registerEntries, ulong missVmcall, ulong hitReturn)
    {
        HitReturn = hitReturn;
        Probe = probe;
        MemoryEntry = memoryEntry;
        this.registerEntries = registerEntries;
        MissVmcall = missVmcall;
    }

    /// <summary>
    /// The register form's entry for a target in register r (any 64-bit GPR but RSP): frame
    /// [flags, saved scratch], the scratch (<see cref="ScratchFor"/>) clobbered, r = target.
    /// </summary>
    public ulong RegisterEntry(Register r) =>
        r.GetSize() == 8 && r != Register.RSP ? registerEntries[r - Register.RAX] : throw new ArgumentOutOfRangeException(nameof(r), r, "not a 64-bit GPR other than RSP");

    /// <summary>The register form's scratch for a target in r: RBX, or RAX when the target is in RBX.</summary>
    public static Register ScratchFor(Register r) => r == Register.RBX ? Register.RAX : Register.RBX;

    /// <summary>A name for listings if a is one of the routine's entries.</summary>
    public string? EntryName(ulong a)
    {
        if (a == Probe) return "jumptable-level2";
        if (a == MemoryEntry) return "jumptable-level2 memory";
        int k = Array.IndexOf(registerEntries, a);
        return k < 0 ? null : $"jumptable-level2 %{(Register.RAX + k).ToString().ToLowerInvariant()}";
    }

    /// <summary>
    /// The level-2 jumptable routine at address at, entered by a jmp from an inline level-1 miss with
    /// interrupts cleared. Scratch lives only on the current stack.
    /// <para>
    /// The probe's frame is [rbx, rax, flags, target (, return address)] with RAX = target (the stack
    /// form leaves exactly that). A hit moves its entry to the front of the group, replaces the target
    /// slot with tx, restores RBX, RAX and the flags and "ret"s to tx, which pops the slot (the stack
    /// is then exactly the native branch's). A miss restores RBX and RAX and enters the dispatcher with
    /// [flags, target].
    /// </para>
    /// <para>
    /// The one-scratch forms have cheaper inline lookups and pay for it here, on a level-1 miss only:
    /// their entries first rebuild the probe's frame. The register form's entry restores the scratch
    /// and stores the target register into its slot, so it is generated per target register (the
    /// shared code cannot know which one a site used).
    /// </para>
    /// </summary>
    public static (byte[] Code, JumpTableLevel2 Routine) Assemble(ulong at, PerCpu perCpu, bool plantedMoveToFrontWithInterrupts = false)
    {
        var a = new Assembler(64);
        var probe = a.CreateLabel();
        var hit0 = a.CreateLabel();
        var hits = new[] { hit0, a.CreateLabel(), a.CreateLabel(), a.CreateLabel() };
        var miss = a.CreateLabel();
        var memoryEntry = a.CreateLabel();
        var registerEntries = new Label[16];
        for (int k = 0; k < 16; k++) registerEntries[k] = a.CreateLabel();
        int g = JumpTable.L2Offset;

        a.Label(ref probe);
        a.mov(rbx, rax);
        a.shr(rbx, 12);
        a.xor(rbx, rax);
        a.and(ebx, (int)JumpTable.IndexMask);
        a.add(rbx, __qword_ptr.gs[(ulong)perCpu.JumpTablePtr]);
        for (int k = 0; k < JumpTable.Probe; k++)
        {
            a.cmp(rax, __qword_ptr[rbx + (g + k * JumpTable.EntryBytes)]);
            a.je(hits[k]);
        }
        a.pop(rbx);
        a.pop(rax);
        a.Label(ref miss);
        a.vmcall();
        for (int k = 1; k < JumpTable.Probe; k++)
        {
            a.Label(ref hits[k]);
            int ek = g + k * JumpTable.EntryBytes;
            var swap = a.CreateLabel();
            if (plantedMoveToFrontWithInterrupts)
            {
                // Planted bug: the swap runs with the native IF (the frame's saved flags at rsp+16).
                a.test(__qword_ptr[rsp + 16], 0x200);
                a.jz(swap);
                a.sti();
                a.Label(ref swap);
            }
            // Swap entry k with entry 0 through the stack (no register is free).
            a.push(__qword_ptr[rbx + g]);
            a.push(__qword_ptr[rbx + (g + 8)]);
            a.push(__qword_ptr[rbx + ek]);
            a.push(__qword_ptr[rbx + (ek + 8)]);
            a.pop(__qword_ptr[rbx + (g + 8)]);
            a.pop(__qword_ptr[rbx + g]);
            a.pop(__qword_ptr[rbx + (ek + 8)]);
            a.pop(__qword_ptr[rbx + ek]);
            if (plantedMoveToFrontWithInterrupts) a.cli();
            a.jmp(hit0);
        }
        a.Label(ref hit0);
        a.mov(rax, __qword_ptr[rbx + (g + 8)]);
        a.mov(__qword_ptr[rsp + 24], rax);
        a.pop(rbx);
        a.pop(rax);
        a.popfq();
        var hitReturn = a.CreateLabel();
        a.Label(ref hitReturn);
        a.ret();

        // Memory form: [rbx, flags, rax] with RAX = target -> [rbx, rax, flags, target].
        a.Label(ref memoryEntry);
        a.push(__qword_ptr[rsp]);            // [rbx, rbx, flags, rax]
        a.mov(rbx, __qword_ptr[rsp + 24]);
        a.mov(__qword_ptr[rsp + 8], rbx);     // [rbx, rax, flags, rax]
        a.mov(__qword_ptr[rsp + 24], rax);    // [rbx, rax, flags, target]
        a.jmp(probe);

        // Register form, target in r: [flags, scratch] -> [rbx, rax, flags, target], RAX = target.
        for (var r = Register.RAX; r <= Register.R15; r++)
        {
            if (r == Register.RSP) continue;
            var target = new AssemblerRegister64(r);
            var scratch = new AssemblerRegister64(ScratchFor(r));
            a.Label(ref registerEntries[r - Register.RAX]);
            a.mov(scratch, __qword_ptr[rsp + 8]); // every register native again
            a.mov(__qword_ptr[rsp + 8], target);  // [flags, target]
            a.push(rax);
            a.push(rbx);                          // [rbx, rax, flags, target]
            if (r != Register.RAX) a.mov(rax, target);
            a.jmp(probe);
        }

        var w = new Stubs.Writer();
        var res = a.Assemble(w, at, BlockEncoderOptions.ReturnNewInstructionOffsets);
        var byRegister = new ulong[16];
        for (int k = 0; k < 16; k++)
            if (Register.RAX + k != Register.RSP) byRegister[k] = res.GetLabelRIP(registerEntries[k]);
        return (w.Bytes.ToArray(), new JumpTableLevel2(res.GetLabelRIP(probe), res.GetLabelRIP(memoryEntry), byRegister, res.GetLabelRIP(miss), res.GetLabelRIP(hitReturn)));
    }
}
