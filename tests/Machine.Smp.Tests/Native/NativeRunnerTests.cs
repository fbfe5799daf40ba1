using Iced.Intel;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Smp.Tests.Native;

public class NativeRunnerTests
{
    const int RAX = 0, RCX = 1, RDX = 2, RBX = 3, RSP = 4, RBP = 5, RSI = 6, RDI = 7, R8 = 8, R15 = 15;

    static byte[] Asm(Action<Assembler> body)
    {
        var a = new Assembler(64);
        body(a);
        using var ms = new MemoryStream();
        a.Assemble(new StreamCodeWriter(ms), 0);
        return ms.ToArray();
    }

    static NativeState State(params (int reg, ulong value)[] regs)
    {
        var s = new NativeState();
        foreach (var (reg, value) in regs) s.Gpr[reg] = value;
        return s;
    }

    static bool Has(NativeState s, ulong flag) => (s.Rflags & flag) != 0;

    [Fact]
    public void AddSetsResultAndClearsCarryAndZero()
    {
        var input = State((RAX, 2), (RBX, 3));
        input.Rflags = NativeState.CF | NativeState.ZF;   // must be overwritten by the add
        var (s, _) = NativeRunner.Run(Asm(a => a.add(rax, rbx)), input, default);
        Assert.Equal(5UL, s.Gpr[RAX]);
        Assert.Equal(3UL, s.Gpr[RBX]);
        Assert.False(Has(s, NativeState.CF));
        Assert.False(Has(s, NativeState.ZF));
        Assert.True(Has(s, NativeState.PF));              // 5 = 0b101: even parity
        Assert.Equal(0UL, s.Rflags & ~NativeState.FlagsMask);
    }

    [Fact]
    public void AddOverflowSetsCarryZeroAndOverflowCorrectly()
    {
        var (s, _) = NativeRunner.Run(Asm(a => a.add(rax, rbx)),
            State((RAX, 0x8000_0000_0000_0000), (RBX, 0x8000_0000_0000_0000)), default);
        Assert.Equal(0UL, s.Gpr[RAX]);
        Assert.True(Has(s, NativeState.CF));
        Assert.True(Has(s, NativeState.ZF));
        Assert.True(Has(s, NativeState.OF));
        Assert.False(Has(s, NativeState.SF));
    }

    [Fact]
    public void Sub32ZeroExtendsAndSetsZeroAndParity()
    {
        var (s, _) = NativeRunner.Run(Asm(a => a.sub(eax, eax)), State((RAX, 0xDEAD_BEEF_1234_5678)), default);
        Assert.Equal(0UL, s.Gpr[RAX]);
        Assert.True(Has(s, NativeState.ZF));
        Assert.True(Has(s, NativeState.PF));
        Assert.False(Has(s, NativeState.CF));
        Assert.False(Has(s, NativeState.SF));
    }

    [Fact]
    public void StcSetsCarryAndEmptyCodePreservesFlags()
    {
        var (s, _) = NativeRunner.Run(Asm(a => a.stc()), new NativeState(), default);
        Assert.True(Has(s, NativeState.CF));

        var flags = NativeState.CF | NativeState.ZF | NativeState.OF | NativeState.SF;
        var (t, _) = NativeRunner.Run(ReadOnlySpan<byte>.Empty, new NativeState { Rflags = flags }, default);
        Assert.Equal(flags, t.Rflags);
    }

    [Fact]
    public void InputCarryIsLoaded()
    {
        var code = Asm(a => a.adc(rax, 0));
        var (withCarry, _) = NativeRunner.Run(code, new NativeState { Gpr = { [RAX] = 10 }, Rflags = NativeState.CF }, default);
        var (withoutCarry, _) = NativeRunner.Run(code, new NativeState { Gpr = { [RAX] = 10 } }, default);
        Assert.Equal(11UL, withCarry.Gpr[RAX]);
        Assert.Equal(10UL, withoutCarry.Gpr[RAX]);
    }

    [Fact]
    public void AllGprsExceptRspRoundTrip()
    {
        var input = new NativeState();
        for (int i = 0; i < 16; i++) input.Gpr[i] = 0x0101_0101_0101_0101UL * (ulong)(i + 1);
        input.Gpr[RSP] = 0x1234;
        var (s, _) = NativeRunner.Run(Asm(a => a.nop()), input, default);
        Assert.Equal(input.Gpr, s.Gpr);

        // Every register, including RDI (loaded last / stored through the xchg), is really live in the code.
        var (t, _) = NativeRunner.Run(Asm(a =>
        {
            a.not(rax); a.not(rcx); a.not(rdx); a.not(rbx); a.not(rbp); a.not(rsi); a.not(rdi);
            a.not(r8); a.not(r9); a.not(r10); a.not(r11); a.not(r12); a.not(r13); a.not(r14); a.not(r15);
        }), input, default);
        for (int i = 0; i < 16; i++)
            Assert.Equal(i == RSP ? input.Gpr[i] : ~input.Gpr[i], t.Gpr[i]);
    }

    [Fact]
    public void StoreWritesScratchPage()
    {
        var scratchIn = new byte[] { 0xAA, 0xBB };
        var (s, scratch) = NativeRunner.Run(Asm(a => a.mov(__qword_ptr[r15 + 8], rcx)),
            State((R15, NativeRunner.ScratchAddress), (RCX, 0x0807_0605_0403_0201)), scratchIn);
        Assert.Equal(NativeRunner.ScratchSize, scratch.Length);
        Assert.Equal(new byte[] { 0xAA, 0xBB, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0 }, scratch[..17]);
        Assert.Equal(NativeRunner.ScratchAddress, s.Gpr[R15]);

        // The page is reset between runs: the previous store does not leak into the next run.
        var (_, again) = NativeRunner.Run(ReadOnlySpan<byte>.Empty, new NativeState(), default);
        Assert.All(again, b => Assert.Equal(0, b));
    }

    [Fact]
    public void LoadReadsScratchInput()
    {
        var scratchIn = new byte[64];
        BitConverter.GetBytes(0xCAFE_F00D_DEAD_BEEFUL).CopyTo(scratchIn, 40);
        var (s, _) = NativeRunner.Run(Asm(a => a.mov(rdx, __qword_ptr[r8 + 40])),
            State((R8, NativeRunner.ScratchAddress)), scratchIn);
        Assert.Equal(0xCAFE_F00D_DEAD_BEEFUL, s.Gpr[RDX]);
    }

    [Fact]
    public void DirectionFlagIsLoadedAndMovsbDecrements()
    {
        ulong src = NativeRunner.ScratchAddress + 100, dst = NativeRunner.ScratchAddress + 200;
        var scratchIn = new byte[101];
        scratchIn[100] = 0x5A;
        var input = State((RSI, src), (RDI, dst));
        input.Rflags = NativeState.DF;
        var (s, scratch) = NativeRunner.Run(Asm(a => a.movsb()), input, scratchIn);
        Assert.Equal(src - 1, s.Gpr[RSI]);
        Assert.Equal(dst - 1, s.Gpr[RDI]);
        Assert.Equal(0x5A, scratch[200]);
        Assert.True(Has(s, NativeState.DF));

        input.Rflags = 0;
        var (u, _) = NativeRunner.Run(Asm(a => a.movsb()), input, scratchIn);
        Assert.Equal(src + 1, u.Gpr[RSI]);
        Assert.Equal(dst + 1, u.Gpr[RDI]);
        Assert.False(Has(u, NativeState.DF));
    }

    [Fact]
    public void InternalBranchesWork()
    {
        // Loop: rcx = 10 iterations adding 3 to rax.
        var (s, _) = NativeRunner.Run(Asm(a =>
        {
            var top = a.CreateLabel();
            a.Label(ref top);
            a.add(rax, 3);
            a.dec(rcx);
            a.jnz(top);
        }), State((RCX, 10)), default);
        Assert.Equal(30UL, s.Gpr[RAX]);
        Assert.Equal(0UL, s.Gpr[RCX]);
        Assert.True(Has(s, NativeState.ZF));
    }

    [Fact]
    public void LargeCodeGrowsRegionAndConcurrentCallsAreSerialised()
    {
        var big = Asm(a => { for (int i = 0; i < 30000; i++) a.inc(rax); });   // ~90 KB > initial region
        Assert.Equal(30000UL, NativeRunner.Run(big, new NativeState(), default).state.Gpr[RAX]);

        var code = Asm(a => { a.add(rax, rbx); a.mov(__qword_ptr[r15], rax); });
        Parallel.For(0, 2000, i =>
        {
            var (s, scratch) = NativeRunner.Run(code,
                State((RAX, (ulong)i), (RBX, 7), (R15, NativeRunner.ScratchAddress)), default);
            Assert.Equal((ulong)i + 7, s.Gpr[RAX]);
            Assert.Equal((ulong)i + 7, BitConverter.ToUInt64(scratch, 0));
        });
    }
}
