// Runs a DiffProgram natively and on the emulator and compares the results.
//
// The native run is the ground truth for everything value-dependent: before an instruction whose
// undefined flags or fault depend on its operands, the program prefix is run natively to read the
// real operand values. Comparison stops (both sides run only the prefix) before the first
// instruction that would divide-fault (the emulator must then raise #DE exactly there), that reads
// an undefined flag or register, or that writes an undefined value to memory.

using System.Text;
using Iced.Intel;
using Harness.Smp.Cpu;
using Harness.Smp.Tests.Native;
using Xunit.Sdk;


namespace Harness.Smp.Tests.Differential;

public sealed record Expected(NativeState State, byte[] Scratch, ulong UndefinedFlags, ulong[] UndefinedRegs);

public sealed record Outcome(int Executed, int Total, string? CutReason, bool DivideError);

public static class DifferentialChecker
{
    static readonly InstructionInfoFactory InfoFactory = new();

    /// <summary>
    /// Runs p on both sides and throws (with a readable diff) when they disagree. The emulator
    /// interprets unless told to compile (Always: every block compiled before its first run).
    /// </summary>
    public static Outcome Check(DiffProgram p, Smp.Compile.BlockCompilation compile = Smp.Compile.BlockCompilation.Off,
        Smp.Compile.CompilerPlant plant = Smp.Compile.CompilerPlant.None)
    {
        var (expected, cut, reason, de) = Predict(p);
        var lines = p.Lines;
        var code = DiffProgram.Code(lines, de ? cut + 1 : cut);
        var emu = EmulatorRunner.Run(code, p.Input(), p.Scratch(), compile, plant);
        string text = Describe(p, cut, reason, de);
        if (de)
        {
            ulong at = EmulatorRunner.CodeAddress + (ulong)DiffProgram.Code(lines, cut).Length;
            string want = $"#DE at rip 0x{at:x}";
            if (emu.Run.Reason != StopReason.TripleFault || !emu.Run.Message.Contains(want))
                throw new XunitException($"expected the emulator to raise {want} (native would fault there), got {emu.Run.Reason}: {emu.Run.Message}{text}");
        }
        else if (emu.Run.Reason != StopReason.Exited)
            throw new XunitException($"emulator stopped with {emu.Run.Reason}: {emu.Run.Message}{text}");
        AssertStateEqual(expected, emu.State, emu.Scratch, text);
        return new Outcome(cut, lines.Count, reason, de);
    }

    static string Describe(DiffProgram p, int cut, string? reason, bool de)
    {
        string mark = de ? "#DE expected here (not run natively)" : reason is null ? "" : $"comparison stops here: {reason}";
        return Environment.NewLine + p.InputText() + p.Disassembly(reason is null && !de ? -1 : cut, mark);
    }

    /// <summary>The native result of the comparable prefix, with the undefined flag/register masks.</summary>
    public static (Expected Expected, int Cut, string? Reason, bool DivideError) Predict(DiffProgram p)
    {
        var lines = p.Lines;
        var input = p.Input();
        var scratchIn = p.Scratch();
        ulong undefFlags = 0;
        var undefRegs = new ulong[16];
        int cut = lines.Count;
        string? reason = null;
        bool de = false;
        NativeState? preState = null;
        byte[]? preScratch = null;

        (NativeState, byte[]) StateBefore(int i)
        {
            if (i == 0) return (input, scratchIn);
            var (s, m) = NativeRunner.Run(DiffProgram.Code(lines, i), input, scratchIn);
            return (s, m);
        }

        for (int i = 0; i < lines.Count; i++)
        {
            var ins = lines[i].Ins;
            var info = InfoFactory.GetInfo(ins);
            // 1. Reads of undefined state: stop comparing before this instruction.
            ulong readFlags = X86Flags(ins.RflagsRead);
            if ((readFlags & undefFlags) != 0) { cut = i; reason = $"reads undefined {DiffProgram.FlagText(readFlags & undefFlags)}"; break; }
            string? badReg = null;
            foreach (var u in info.GetUsedRegisters())
            {
                if (!u.Register.IsGPR()) continue;
                bool reads = u.Access is OpAccess.Read or OpAccess.CondRead or OpAccess.ReadWrite or OpAccess.ReadCondWrite or OpAccess.CondWrite;
                if (reads && (undefRegs[UndefinedFlags.GprNumber(u.Register)] & UndefinedFlags.RegisterBits(u.Register)) != 0) badReg = u.Register.ToString();
            }
            if (badReg is not null) { cut = i; reason = $"reads undefined {badReg}"; break; }

            // 2. Value-dependent effects need the real state before the instruction.
            Effect e;
            if (NeedsState(ins))
            {
                (preState, preScratch) = StateBefore(i);
                e = UndefinedFlags.Evaluate(ins, preState, preScratch);
            }
            else e = UndefinedFlags.Evaluate(ins, input, scratchIn);
            if (e.DivideError) { cut = i; de = true; break; }
            if (e.UndefinedMemory) { cut = i; reason = "writes an undefined value to memory"; break; }

            // 3. Definedness after the instruction.
            undefFlags = (undefFlags & ~(e.Defined | e.Undefined)) | e.Undefined;
            foreach (var u in info.GetUsedRegisters())
            {
                if (!u.Register.IsGPR()) continue;
                if (u.Access is OpAccess.Write or OpAccess.ReadWrite or OpAccess.CondWrite or OpAccess.ReadCondWrite)
                {
                    ulong bits = u.Register.GetSize() == 4 ? ulong.MaxValue : UndefinedFlags.RegisterBits(u.Register);
                    undefRegs[UndefinedFlags.GprNumber(u.Register)] &= ~bits;
                }
            }
            foreach (var (gpr, bits) in e.UndefinedRegs) undefRegs[gpr] |= bits;
        }

        var (finalState, finalScratch) = StateBefore(cut);
        return (new Expected(finalState, finalScratch, undefFlags, undefRegs), cut, reason, de);
    }

    static bool NeedsState(in Instruction ins) => ins.Mnemonic switch
    {
        Mnemonic.Shl or Mnemonic.Sal or Mnemonic.Shr or Mnemonic.Sar or Mnemonic.Rol or Mnemonic.Ror
            or Mnemonic.Rcl or Mnemonic.Rcr or Mnemonic.Shld or Mnemonic.Shrd
            => ins.GetOpKind(ins.OpCount - 1) == OpKind.Register, // count in CL
        Mnemonic.Bsf or Mnemonic.Bsr or Mnemonic.Div or Mnemonic.Idiv => true,
        Mnemonic.Cmpsb or Mnemonic.Cmpsw or Mnemonic.Cmpsd or Mnemonic.Cmpsq
            or Mnemonic.Scasb or Mnemonic.Scasw or Mnemonic.Scasd or Mnemonic.Scasq => true,
        _ => false,
    };

    /// <summary>Iced's flag bits as RFLAGS bits (CF PF AF ZF SF DF OF: the ones the checker compares).</summary>
    internal static ulong X86Flags(RflagsBits b)
    {
        ulong f = 0;
        if ((b & RflagsBits.CF) != 0) f |= NativeState.CF;
        if ((b & RflagsBits.PF) != 0) f |= NativeState.PF;
        if ((b & RflagsBits.AF) != 0) f |= NativeState.AF;
        if ((b & RflagsBits.ZF) != 0) f |= NativeState.ZF;
        if ((b & RflagsBits.SF) != 0) f |= NativeState.SF;
        if ((b & RflagsBits.DF) != 0) f |= NativeState.DF;
        if ((b & RflagsBits.OF) != 0) f |= NativeState.OF;
        return f;
    }

    /// <summary>
    /// Compares every GPR, the CF PF AF ZF SF DF OF flags and the whole scratch page, except the
    /// undefined flags/register bits in expected; throws one XunitException with a diff table.
    /// </summary>
    public static void AssertStateEqual(Expected expected, NativeState actual, byte[] actualScratch, string program)
    {
        var sb = new StringBuilder();
        int bad = 0;
        sb.AppendLine("emulator state differs from the host CPU:");
        sb.AppendLine($"  {"reg",-6} {"expected (host)",-18} {"actual (emulator)",-18} {"undefined bits",-18}");
        for (int i = 0; i < 16; i++)
        {
            ulong mask = ~expected.UndefinedRegs[i];
            ulong e = expected.State.Gpr[i], a = actual.Gpr[i];
            bool diff = ((e ^ a) & mask) != 0;
            if (diff) bad++;
            if (diff || expected.UndefinedRegs[i] != 0)
                sb.AppendLine($"  {DiffProgram.RegName(i),-6} {e,-18:x16} {a,-18:x16} {(expected.UndefinedRegs[i] == 0 ? "" : expected.UndefinedRegs[i].ToString("x16")),-18}{(diff ? " <-- differs" : "")}");
        }
        foreach (var (bit, name) in DiffProgram.FlagNames)
        {
            bool undef = (expected.UndefinedFlags & bit) != 0;
            bool e = (expected.State.Rflags & bit) != 0, a = (actual.Rflags & bit) != 0;
            bool diff = !undef && e != a;
            if (diff) bad++;
            sb.AppendLine($"  {name,-6} {(e ? 1 : 0),-18} {(a ? 1 : 0),-18} {(undef ? "undefined" : ""),-18}{(diff ? " <-- differs" : "")}");
        }
        int memDiffs = 0;
        for (int i = 0; i < expected.Scratch.Length; i++)
        {
            if (expected.Scratch[i] == actualScratch[i]) continue;
            if (memDiffs++ < 32)
                sb.AppendLine($"  [scratch+0x{i:x3}] (r15{i - 0x800:+0;-0}) expected {expected.Scratch[i]:x2} actual {actualScratch[i]:x2}  <-- differs");
        }
        if (memDiffs > 32) sb.AppendLine($"  ... {memDiffs - 32} more differing scratch bytes");
        bad += memDiffs;
        if (bad == 0) return;
        throw new XunitException(sb.ToString() + "program:" + program);
    }
}
