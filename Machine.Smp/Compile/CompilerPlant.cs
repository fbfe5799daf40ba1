namespace Harness.Smp.Compile;

/// <summary>
/// Bugs planted in the block compiler on purpose, so the checks that guard it show they fail
/// (tests/Machine.Smp.Tests/Compile). Never set outside those tests.
/// </summary>
public enum CompilerPlant
{
    None,
    /// <summary>After cmp/sub, jb/setb/cmovb (and their negations) test "above" instead of "below".</summary>
    BelowIsAbove,
    /// <summary>
    /// An edge inside a region enters the next block while any budget is left, not only when the
    /// budget covers the whole block: an event due inside that block (a slice end, an interrupt) is taken late.
    /// </summary>
    EdgeOvershootsBudget,
}
