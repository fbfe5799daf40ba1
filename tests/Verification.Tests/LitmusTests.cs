using Harness.Smp.Memory;
using Harness.Verification.Litmus;
using Xunit;
using Xunit.Abstractions;

namespace Harness.Verification.Tests;

/// <summary>
/// `harness litmus` against herd7: the public corpus (154 tests of litmus-tests-x86 with herd's
/// x86-TSO verdicts, copied from ../shared/litmus-x86 with its licence) and the classic tests
/// (SB, MP, LB, IRIW, 2+2W, R, S, WRC, RWC, the x86-TSO paper's n4-n7, with mfence, xchg and
/// locked forms, in both of herd's syntaxes) give the expected verdict; under sequential
/// consistency the store-buffering outcomes disappear (so the verdicts come from the model, not
/// the host); Coyote sampling sees SB only under TSO; malformed files are named by file, line and token.
/// </summary>
public class LitmusTests(ITestOutputHelper output)
{
    private static string Dir(string name) => Path.Combine(Support.RepoRoot, "tests", "Verification.Tests", "Litmus", name);

    private static IEnumerable<(string Path, LitmusVerdict Expected, int Line)> Verdicts(string dir)
    {
        int line = 0;
        foreach (var text in File.ReadLines(Path.Combine(dir, "verdicts.tsv")))
        {
            line++;
            if (text.Length == 0 || text.StartsWith('#')) continue;
            var p = text.Split('\t');
            yield return (Path.Combine(dir, p[0]), Enum.Parse<LitmusVerdict>(p[1]), line);
        }
    }

    /// <summary>Runs every test of a verdicts.tsv; returns the mismatches as "verdicts.tsv:LINE name: got X, expected Y".</summary>
    private List<string> Mismatches(string dir, MemoryModel model)
    {
        var bad = new List<string>();
        int n = 0;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        foreach (var (path, expected, line) in Verdicts(dir))
        {
            var r = LitmusRunner.Exhaustive(LitmusParser.ParseFile(path), model);
            n++;
            if (r.Verdict != expected) bad.Add($"verdicts.tsv:{line} {r.Test.Name}: {r.ObservationLine}, expected {expected}");
        }
        output.WriteLine($"{n} tests in {sw.Elapsed.TotalSeconds:F2} s under {model}; {bad.Count} differ");
        foreach (var b in bad) output.WriteLine(b);
        return bad;
    }

    [Fact]
    public void ThePublicCorpusGetsHerdsVerdictForEveryTest()
    {
        string dir = Dir("litmus-x86");
        Assert.Equal(154, Verdicts(dir).Count());
        var bad = Mismatches(dir, MemoryModel.Tso);
        Assert.True(bad.Count == 0, string.Join('\n', bad));
    }

    [Fact]
    public void TheClassicTestsGetX86TsosVerdicts()
    {
        var bad = Mismatches(Dir("classic"), MemoryModel.Tso);
        Assert.True(bad.Count == 0, string.Join('\n', bad));
    }

    /// <summary>
    /// The conformance check fails for a machine that does not model store buffers: under SC every
    /// outcome that needs one is never observed, so exactly those tests' verdicts differ.
    /// </summary>
    [Fact]
    public void UnderSequentialConsistencyTheStoreBufferingVerdictsAreWrong()
    {
        var bad = Mismatches(Dir("classic"), MemoryModel.Sc);
        string[] needBuffers = ["SB", "R", "RWC", "n6", "SB+rfi-pos", "SB+xadds-unlocked"];
        Assert.Equal(needBuffers.Length, bad.Count);
        foreach (var name in needBuffers) Assert.Contains(bad, b => b.Contains($" {name}: Observation {name} Never"));
        Assert.NotEmpty(Mismatches(Dir("litmus-x86"), MemoryModel.Sc));
    }

    [Fact]
    public void CoyoteSamplingSeesStoreBufferingOnlyUnderTso()
    {
        var sb = LitmusParser.ParseFile(Path.Combine(Dir("classic"), "SB.litmus"));
        var tso = LitmusRunner.Sample(sb, iterations: 60, seed: 1, MemoryModel.Tso);
        var sc = LitmusRunner.Sample(sb, iterations: 60, seed: 1, MemoryModel.Sc);
        output.WriteLine(tso.HerdText());
        output.WriteLine(sc.HerdText());
        Assert.Equal(LitmusVerdict.Sometimes, tso.Verdict);
        Assert.Equal(4, tso.States.Count);
        Assert.Equal(LitmusVerdict.Never, sc.Verdict);
        // The same seed explores the same executions.
        Assert.Equal(tso.States.Count, LitmusRunner.Sample(sb, iterations: 60, seed: 1, MemoryModel.Tso).States.Count);
    }

    [Fact]
    public void TheReportIsHerdsFormat()
    {
        var r = LitmusRunner.Exhaustive(LitmusParser.ParseFile(Path.Combine(Dir("classic"), "SB.litmus")));
        string text = r.HerdText();
        output.WriteLine(text);
        Assert.StartsWith("Test SB Allowed\nStates 4\n0:EAX=0; 1:EAX=0; \n", text.Replace("\r", ""));
        Assert.Contains("\nOk\nWitnesses\nPositive: 1 Negative: 3\nCondition exists (0:EAX=0 /\\ 1:EAX=0)\nObservation SB Sometimes 1 3\n", text.Replace("\r", ""));
    }

    /// <summary>Malformed tests: the error names the file, line, column and what was found.</summary>
    public static TheoryData<string, string, string> BadTests => new()
    {
        { "ARM SB\n{}\n P0 ;\n NOP ;\nexists (x=1)\n", "t.litmus:1:1:", "unsupported architecture 'ARM'" },
        { "X86 T\n{ x=0 }\n P0 ;\n MOV [x],$1 ;\nexists (x=1 /\\ )\n", "t.litmus:5:16:", "expected a register such as '0:rax' or a location, found ')'" },
        { "X86 T\n{ x=0; }\n P0 | P1 ;\n MOV [x],$1 ;\nexists (x=1)\n", "t.litmus:4:1:", "a row with 1 columns in a test of 2 threads" },
        { "X86 T\n{ x=0; }\n P0 ;\n FROB [x],$1 ;\nexists (x=1)\n", "t.litmus:4:2:", "unsupported instruction 'FROB'" },
        { "X86 T\n{ x=0; }\n P0 ;\n MOV [z],$1 ;\nexists (x=1)\n", "t.litmus:4:2:", "unknown location 'z'" },
        { "X86 T\n{ x=0;\n P0 ;\n MOV [x],$1 ;\nexists (x=1)\n", "t.litmus:2:1:", "not closed" },
        { "X86 T\n{ x=0; }\n P0 ;\n MOV [x],$1 ;\nexists (x=1 /\\ 0:EAX=)\n", "t.litmus:5:", "cannot read the value" },
        { "X86 T\n{ x=0; }\n P0 ;\n MOV [x],$1 ;\nsometimes (x=1)\n", "t.litmus:5:1:", "no final condition" },
        { "X86 T\n{ x=0; }\n P1 ;\n MOV [x],$1 ;\nexists (x=1)\n", "t.litmus:3:2:", "expected thread name 'P0'" },
        { "X86 T\n{ x=0; }\n P0 ;\n JMP L9 ;\nexists (x=1)\n", "t.litmus:4:1:", "jumps to label 'L9'" },
        { "X86 T\n(* unclosed\n{ x=0; }\n", "t.litmus:2:1:", "comment is not closed" },
        { "X86 T\n{ x=0; }\n P0 ;\n MOV [x],$1 ;\nexists (x=1 /\\ 2:EAX=0)\n", "t.litmus:5:1:", "names thread 2, but the test has 1 threads" },
    };

    [Theory]
    [MemberData(nameof(BadTests))]
    public void AMalformedTestIsNamedByFileLineAndToken(string text, string where, string what)
    {
        var e = Assert.Throws<LitmusException>(() =>
        {
            var t = LitmusParser.Parse(text, "t.litmus");
            LitmusRunner.Exhaustive(t);
        });
        output.WriteLine(e.Message);
        Assert.StartsWith(where, e.Message);
        Assert.Contains(what, e.Message);
    }

    [Fact]
    public void AnAccessOutsideTheLocationsIsRefusedNotMisjudged()
    {
        var t = LitmusParser.Parse("X86 Out\n{ x=0; 0:EBX=4096; }\n P0 ;\n MOV [EBX],$1 ;\nexists (x=0)\n", "out.litmus");
        var e = Assert.Throws<LitmusRunException>(() => LitmusRunner.Exhaustive(t));
        Assert.Contains("out.litmus: P0 accesses 0x1000", e.Message);
        Assert.Contains("line 4", e.Message);
    }

    [Fact]
    public void ARunawayThreadIsReportedNotHung()
    {
        var t = LitmusParser.Parse("X86 Loop\n{ x=0; }\n P0 ;\n L0: ;\n INC EAX ;\n JMP L0 ;\nexists (x=1)\n", "loop.litmus");
        var e = Assert.Throws<LitmusRunException>(() => LitmusRunner.Exhaustive(t, maxStates: 10_000));
        Assert.Contains("loop.litmus", e.Message);
    }
}
