using Harness.Smp.Decode;
using Iced.Intel;
using Xunit;

namespace Harness.Smp.Tests.Decode;

/// <summary>
/// Pins what the decode table says about instructions: how the block ends after each, which read
/// the clock (and so run alone in their block), which operand forms and prefixes have a handler.
/// One row per vector; the line number names a failing row.
/// </summary>
public unsafe class OpTableTests
{
    private const OpFlow Ends = OpFlow.EndsBlock, Branch = OpFlow.Branch | OpFlow.EndsBlock, Clock = OpFlow.ReadsClock | OpFlow.EndsBlock;

    // hex bytes, the instruction, the flow decode must report, whether a handler exists
    private static readonly (string Hex, string Text, OpFlow Flow, bool Supported)[] Vectors =
    [
        ("01d8", "add eax, ebx", OpFlow.Plain, true),
        ("6601d8", "add ax, bx", OpFlow.Plain, true),
        ("00e0", "add al, ah", OpFlow.Plain, true),
        ("f00118", "lock add [rax], ebx", OpFlow.Plain, true),
        ("f0ff00", "lock inc dword [rax]", OpFlow.Plain, true),
        ("3918", "cmp [rax], ebx", OpFlow.Plain, true),
        ("0fa3c3", "bt ebx, eax", OpFlow.Plain, true),
        ("f00fab18", "lock bts [rax], ebx", OpFlow.Plain, true),
        ("6bc307", "imul eax, ebx, 7", OpFlow.Plain, true),
        ("f7e3", "mul ebx", OpFlow.Plain, true),
        ("0f44c3", "cmove eax, ebx", OpFlow.Plain, true),
        ("0f94c0", "sete al", OpFlow.Plain, true),
        ("8d0418", "lea eax, [rax+rbx]", OpFlow.Plain, true),
        ("8718", "xchg [rax], ebx", OpFlow.Plain, true),
        ("0fc118", "xadd [rax], ebx", OpFlow.Plain, true),
        ("8cd0", "mov eax, ss", OpFlow.Plain, true),
        ("8ed8", "mov ds, eax", Ends, true),
        ("0f22d8", "mov cr3, rax", Ends, true),
        ("7400", "je +0", OpFlow.Branch, true),
        ("7c00", "jl +0", OpFlow.Branch, true),
        ("c3", "ret", OpFlow.Branch, true),
        ("cd80", "int 0x80", Branch, true),
        ("fa", "cli", Ends, true),
        ("0fa2", "cpuid", OpFlow.Plain, true),
        // Guest time: these start their own block and end it.
        ("0f31", "rdtsc", Clock, true),
        ("0f01f9", "rdtscp", Clock, true),
        ("0f32", "rdmsr", Clock, true),
        ("0f30", "wrmsr", Clock, true),
        ("fb", "sti", Clock, true),
        ("8ed0", "mov ss, eax", Clock, true),
        ("17", "pop ss (invalid in 64-bit mode)", Ends, true),
        // No handler: the machine stops naming the instruction.
        ("d9e8", "fld1", Ends, false),
        ("0f0b", "ud2", Ends, true),
    ];

    public static TheoryData<int> Rows() => new(Enumerable.Range(0, Vectors.Length));

    [Theory]
    [MemberData(nameof(Rows))]
    public void Row(int i)
    {
        var (hex, text, flow, supported) = Vectors[i];
        var bytes = Convert.FromHexString(hex);
        var dec = Decoder.Create(64, new ByteArrayCodeReader(bytes), 0x1000);
        dec.Decode(out var ins);
        var x = new Insn();
        var got = OpTable.Build(ref x, ins);
        bool hasHandler = (nint)x.Exec != (nint)(delegate*<Vcpu, ref Insn, void>)&Exec.SystemOps.Unsupported;
        Assert.True(flow == got && supported == hasHandler,
            $"vector {i} ({text}, {hex}): flow {got}, handler {(hasHandler ? "yes" : "no")}; expected {flow}, {(supported ? "yes" : "no")}");
    }

    [Fact]
    public void Compare_and_test_have_no_locked_form_and_the_writing_ops_do()
    {
        Assert.True(OpTable.TryRow(Mnemonic.Cmp, out var cmp));
        Assert.True(OpTable.TryRow(Mnemonic.Add, out var add));
        Assert.Equal(0, (nint)cmp.Forms!.Find(Form.MR, 2, isLocked: true));
        Assert.NotEqual(0, (nint)cmp.Forms.Find(Form.MR, 2, isLocked: false));
        Assert.NotEqual(0, (nint)add.Forms!.Find(Form.MI, 3, isLocked: true));
        // Each size of a form is its own specialization of one generic definition.
        Assert.NotEqual((nint)add.Forms.Find(Form.RR, 2, false), (nint)add.Forms.Find(Form.RR, 3, false));
    }
}
