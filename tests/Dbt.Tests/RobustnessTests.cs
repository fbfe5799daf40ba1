using Harness.Smp;
using Harness.Tests.Shared;
using Iced.Intel;
using Xunit;
using Xunit.Abstractions;
using static Iced.Intel.AssemblerRegisters;

namespace Harness.Dbt.Tests;

/// <summary>
/// Bad guests under the DBT end with a harness message and a documented exit code, never a host
/// crash. Each runs the CLI as a child process, so a stack overflow fails this test instead of
/// taking the test host down with it.
/// </summary>
public class RobustnessTests(ITestOutputHelper output) : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("harness-dbt-robustness-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
    }

    private (int Code, string Stdout, string Stderr) Harness(params string[] args)
    {
        var r = HarnessCli.Run(TimeSpan.FromMinutes(2), args);
        output.WriteLine($"exit {r.Code}\n--- stdout\n{r.Stdout}\n--- stderr\n{r.Stderr}");
        return r;
    }

    private const ulong Alias = 0xFFFF_FFFF_8000_0000;
    private const ulong CodePhys = 0x100000, IdtPhys = 0x101000, StackPhys = 0x110000, HandlerPhys = 0x200000;

    /// <summary>
    /// A ring-0 image (linked in the -2 GiB alias) that loads a one-gate IDT and raises the gate's
    /// vector with int: natively the handler exits with 99. The handler is followed by what the
    /// caller gives (zero bytes by default: a fall-through into zeroed memory).
    /// </summary>
    private string ImageWithHandler(string name, Action<Assembler> handler, int vector = 32)
    {
        var code = Assemble(a =>
        {
            a.mov(rsp, Alias + StackPhys);
            a.lidt(__[Alias + IdtPhys]);
            a.@int((byte)vector);
            a.mov(eax, 1);
            a.@out(0xF4, eax);
            a.hlt();
        }, Alias + CodePhys);
        var body = Assemble(handler, Alias + HandlerPhys);
        // IDTR (limit, base) then the gates from offset 16.
        int gates = vector + 1;
        var idt = new byte[16 + gates * 16];
        BitConverter.TryWriteBytes(idt.AsSpan(0), (ushort)(gates * 16 - 1));
        BitConverter.TryWriteBytes(idt.AsSpan(2), Alias + IdtPhys + 16);
        var gate = idt.AsSpan(16 + vector * 16);
        ulong target = Alias + HandlerPhys;
        BitConverter.TryWriteBytes(gate, (ushort)target);
        BitConverter.TryWriteBytes(gate[2..], (ushort)0x08);
        gate[5] = 0x8E; // present interrupt gate, DPL 0
        BitConverter.TryWriteBytes(gate[6..], (ushort)(target >> 16));
        BitConverter.TryWriteBytes(gate[8..], (uint)(target >> 32));
        // The lidt operand is the IDTR at the table's start.
        var elf = new ElfBuilder
        {
            Entry = Alias + CodePhys,
            Segments =
            {
                new ElfBuilder.Segment(CodePhys, Alias + CodePhys, code, (ulong)code.Length),
                new ElfBuilder.Segment(HandlerPhys, Alias + HandlerPhys, body, (ulong)body.Length),
                new ElfBuilder.Segment(IdtPhys, Alias + IdtPhys, idt, (ulong)idt.Length),
            },
        };
        string path = Path.Combine(dir, name);
        File.WriteAllBytes(path, elf.Build());
        return path;
    }

    private static byte[] Assemble(Action<Assembler> body, ulong at)
    {
        var a = new Assembler(64);
        body(a);
        using var ms = new MemoryStream();
        a.Assemble(new StreamCodeWriter(ms), at);
        return ms.ToArray();
    }

    [Theory]
    [InlineData("default")]
    [InlineData("no-callret")]
    public void AnEntryPathIntoZeroedMemoryIsAHostErrorNamingTheVectorNotAStackOverflow(string config)
    {
        string image = ImageWithHandler("exit-then-zeros.elf", a => { a.mov(eax, 99); a.@out(0xF4, eax); });
        Assert.Equal(99, Harness("run", image, "--vcpus", "1").Code);

        var (code, _, stderr) = Harness("run", image, "--vcpus", "1", "--dbt", config);
        Assert.True(code == 125, $"exit {code} (a host crash is 134)");
        Assert.Contains("machine stopped: HostError", stderr);
        Assert.Contains("vector 32", stderr);
        Assert.Contains($"0x{Alias + HandlerPhys:x}", stderr);
        Assert.Contains("does not write the frame's redundant slot within", stderr);
        Assert.Contains("stopped at 0x", stderr);
        Assert.DoesNotContain("   at ", stderr); // a message, not a stack trace
    }

    [Fact]
    public void AnEntryPathThatLoopsBeforeTheSlotIsRefusedAndADiamondIsNot()
    {
        // Natively the loop spins until the instruction limit; translated, building the gate refuses it.
        string loop = ImageWithHandler("loop.elf", a => { var top = a.CreateLabel(); a.Label(ref top); a.dec(ecx); a.jnz(top); a.jmp(top); });
        var (code, _, stderr) = Harness("run", loop, "--vcpus", "1", "--dbt", "default");
        Assert.True(code == 125, $"exit {code}");
        Assert.Contains("vector 32", stderr);
        Assert.Contains("loops back to 0x", stderr);

        // Two paths that meet again (a jcc over a block, both then reaching the slot's write) are no loop.
        string diamond = ImageWithHandler("diamond.elf", a =>
        {
            var left = a.CreateLabel(); var join = a.CreateLabel();
            a.test(ecx, ecx);
            a.jz(left);
            a.nop();
            a.jmp(join);
            a.Label(ref left);
            a.nop();
            a.Label(ref join);
            a.push(0);
            a.push(0x20);
            a.push(rax);               // writes the redundant slot, 24 bytes below the saved RIP (no error code)
            a.mov(eax, 99);
            a.@out(0xF4, eax);
            a.hlt();
        });
        var d = Harness("run", diamond, "--vcpus", "1", "--dbt", "default");
        Assert.True(d.Code == 99, $"exit {d.Code}: {d.Stderr}");
    }

    [Fact]
    public void AFixupInsideTheBlockOfItsOwnFaultingInstructionTranslates()
    {
        // __ex_table {fault, fixup}: the fixup is the start of a block that contains the faulting
        // load again, so translating it registers another copy with the same fixup (once recursion).
        const ulong Table = Alias + IdtPhys;
        ulong fault = 0, retry = 0;
        byte[] Code() => Assemble(a =>
        {
            var again = a.CreateLabel(); var load = a.CreateLabel(); var done = a.CreateLabel();
            a.mov(rsp, Alias + StackPhys);
            a.mov(ecx, 1);
            a.Label(ref again);
            a.dec(ecx);
            a.jz(done);
            a.Label(ref load);
            a.mov(rax, __qword_ptr[0x0000_2000_0000_0000]); // unmapped: never reached (ecx reaches 0 first)
            a.jmp(again);
            a.Label(ref done);
            a.mov(eax, 7);
            a.@out(0xF4, eax);
            a.hlt();
        }, Alias + CodePhys);
        var code = Code();
        // The addresses of the labels, from the instruction boundaries (mov rsp, mov ecx = 10 + 5 bytes; dec 2, jz 2).
        retry = Alias + CodePhys + 15;
        fault = retry + 4;
        var table = new byte[16];
        BitConverter.TryWriteBytes(table.AsSpan(0), fault);
        BitConverter.TryWriteBytes(table.AsSpan(8), retry);
        var elf = new ElfBuilder
        {
            Entry = Alias + CodePhys,
            Segments =
            {
                new ElfBuilder.Segment(CodePhys, Alias + CodePhys, code, (ulong)code.Length),
                new ElfBuilder.Segment(IdtPhys, Table, table, (ulong)table.Length),
            },
            Symbols = { ("__ex_table_start", Table), ("__ex_table_end", Table + 16) },
        };
        string path = Path.Combine(dir, "self-fixup.elf");
        File.WriteAllBytes(path, elf.Build());
        Assert.Equal(7, Harness("run", path, "--vcpus", "1").Code);
        var (code2, _, stderr) = Harness("run", path, "--vcpus", "1", "--dbt", "default", "--stats");
        Assert.True(code2 == 7, $"exit {code2}");
        Assert.Contains("dbt: blocks=", stderr);
    }

    [Fact]
    public void ClientCountersKeepTheirLastValuesAfterTheMachineIsDisposed()
    {
        var code = Support.Asm(a =>
        {
            var loop = a.CreateLabel();
            a.mov(ecx, 100);
            a.Label(ref loop);
            a.dec(ecx);
            a.jnz(loop);
            Support.Exit(a);
        });
        var m = new Machine(new MachineOptions
        {
            Vcpus = 1, MemoryBytes = 32UL << 20, ReservedBytes = 4UL << 20, Control = new Smp.Control.Deterministic(100),
        });
        m.Memory.Write(Support.CodePhys, code);
        var dbt = KernelDbt.Attach(m, DbtOptions.Default with { Clients = [Clients.Prof.ClientName] });
        var r = m.Run(entry: Support.Code, setup: v => v.Gpr(4) = Support.StackTop);
        Assert.True(r.Exited, r.Message);
        var prof = dbt.Client<Clients.Prof>()!;
        long before = prof.Read().Instructions;
        Assert.True(before >= 200, $"prof counted {before} instructions");
        m.Dispose();
        // Read after dispose: the value it had (once an AccessViolationException in PhysicalMemory.ReadU64 that killed the process).
        Assert.Equal(before, prof.Read().Instructions);
        Assert.Throws<ObjectDisposedException>(() => dbt.Cache.ReadU64(dbt.Cache.ExitStub));
        m.Dispose(); // twice: no double free
    }

    /// <summary>
    /// One row of docs/dbt.md's table "Native and translated outcomes": an image at At, how it ends
    /// natively and how it ends translated (the same unless the table says why not).
    /// </summary>
    public sealed record OutcomeCase(string Name, ulong At, int MemoryMiB, string Native, string Translated, string TranslatedSays, Func<ulong, byte[]> Build)
    {
        public override string ToString() => Name;
    }

    private static Func<ulong, byte[]> Code(Action<Assembler> body) => at => Assemble(body, at);

    public static TheoryData<OutcomeCase> OutcomeCases => new()
    {
        new("ud2 without an IDT", 0x100000, 256, "TripleFault", "TripleFault", "[translated code: native rip 0x100000: ud2", Code(a => a.ud2())),
        new("jump outside RAM", 0x100000, 256, "TripleFault", "TripleFault", "#UD at rip 0x40000000", Code(a => { a.mov(eax, 0x4000_0000); a.jmp(rax); })),
        new("jump to an unmapped address", 0x100000, 256, "TripleFault", "TripleFault", "#PF", Code(a => { a.mov(rax, 0x0000_2000_0000_0000UL); a.jmp(rax); })),
        new("far return to another privilege", 0x100000, 256, "Unsupported", "Unsupported", "far return to CS 0x2b at rip 0x10000",
            Code(a => { a.push(0x2b); a.push(0x100000); a.db(0x48, 0xCB); })), // retfq
        new("an instruction the machine does not implement", 0x100000, 256, "Unsupported", "Unsupported",
            "[translated code: native rip 0x100000: vaddps", Code(a => a.vaddps(ymm0, ymm0, ymm0))),
        new("RIP-relative load out of the cache's rel32 reach, in the low 2 GiB", 0x100000, 256, "exit 255", "exit 255", "",
            at => RipRelativeLoadThenExit(at, 0x4000_0000)),
        new("RIP-relative load out of every reach of the cache", 0x7000_0000, 2048, "exit 255", "HostError",
            "neither a rel32 from the code cache", at => RipRelativeLoadThenExit(at, 0xC000_0000)),
    };

    [Theory]
    [MemberData(nameof(OutcomeCases))]
    public void NativeAndTranslatedOutcomesMatchTheTable(OutcomeCase c)
    {
        string path = Path.Combine(dir, $"outcome-{c.At:x}-{Math.Abs(c.Name.GetHashCode()):x}.elf");
        File.WriteAllBytes(path, ElfBuilder.For(c.Build(c.At), c.At).Build());
        static string Outcome((int Code, string Stdout, string Stderr) r) =>
            r.Stderr.Split('\n').FirstOrDefault(l => l.StartsWith("harness: machine stopped: ", StringComparison.Ordinal)) is { } l
                ? l["harness: machine stopped: ".Length..].Split(':')[0] : $"exit {r.Code}";
        var native = Harness("run", path, "--vcpus", "1", "--memory", c.MemoryMiB.ToString());
        var translated = Harness("run", path, "--vcpus", "1", "--memory", c.MemoryMiB.ToString(), "--dbt", "default");
        Assert.Equal(c.Native, Outcome(native));
        Assert.Equal(c.Translated, Outcome(translated));
        Assert.Contains(c.TranslatedSays, translated.Stderr);
    }

    /// <summary>mov eax, [rip + (target - next)]; out 0xF4, eax: natively all-ones (beyond RAM), so exit 255.</summary>
    private static byte[] RipRelativeLoadThenExit(ulong at, ulong target)
    {
        var code = new List<byte> { 0x8B, 0x05 };
        code.AddRange(BitConverter.GetBytes(checked((int)(long)(target - (at + 6)))));
        code.AddRange(new byte[] { 0xE7, 0xF4, 0xF4 });
        return code.ToArray();
    }

    [Fact]
    public void AnUnknownWorkloadListsTheKernelsWorkloads()
    {
        var (code, stdout, stderr) = Harness("run", "--workload", "null_syscall,nosuchthing", "--vcpus", "1");
        Assert.Equal(2, code);
        Assert.Contains("no workload named 'nosuchthing'", stderr);
        foreach (var name in new[] { "null_syscall", "fileserver", "selftest", "pipe_rtt" }) Assert.Contains(name, stderr);
        Assert.Equal("", stdout); // refused before the kernel booted
    }

    [Fact]
    public void ADbtOnAtBeyondTheRunIsAWarning()
    {
        var (code, _, stderr) = Harness("run", "--workload", "null_syscall", "--vcpus", "1", "--dbt", "default", "--dbt-on-at", "999999999999");
        Assert.Equal(0, code);
        Assert.Contains("harness: warning: the DBT never switched on", stderr);
        var json = Harness("run", "--workload", "null_syscall", "--vcpus", "1", "--dbt", "default", "--dbt-on-at", "999999999999", "--stats", "json");
        using var doc = System.Text.Json.JsonDocument.Parse(json.Stderr);
        Assert.Contains("never switched on", doc.RootElement.GetProperty("warnings")[0].GetString());
        var early = Harness("run", "--workload", "null_syscall", "--vcpus", "1", "--dbt", "default", "--dbt-on-at", "100000");
        Assert.DoesNotContain("warning", early.Stderr);
    }

    /// <summary>
    /// The DBT must be the first agent asked for vmcalls and start RIPs (its edge stubs are vmcalls):
    /// attaching it behind one that handles them is refused with the reason; a second DBT too.
    /// </summary>
    [Fact]
    public void AttachingBehindAVmcallAgentOrTwiceIsRefused()
    {
        using var m = new Machine(new MachineOptions { Vcpus = 1, MemoryBytes = 32UL << 20, ReservedBytes = 4UL << 20 });
        m.OnVmcall(_ => { });
        var e = Assert.Throws<InvalidOperationException>(() => KernelDbt.Attach(m));
        Assert.Contains("attach the DBT first", e.Message);

        using var m2 = new Machine(new MachineOptions { Vcpus = 1, MemoryBytes = 32UL << 20, ReservedBytes = 4UL << 20 });
        KernelDbt.Attach(m2);
        m2.OnBlockDecoded((_, _, _) => { }); // observers after the DBT are fine
        Assert.Contains("attached to this machine already", Assert.Throws<InvalidOperationException>(() => KernelDbt.Attach(m2)).Message);
    }
}
