using Harness.Smp.Cpu;
using Xunit;

namespace Harness.Smp.Tests.SystemTests;

/// <summary>How the system tests check a guest's end.</summary>
internal static class Exits
{
    public static void AssertExited(RunResult r, int status = 0) =>
        Assert.True(r.Reason == StopReason.Exited && r.ExitStatus == status, $"expected exit {status}, got {r.Reason} {r.ExitStatus}: {r.Message}");
}
