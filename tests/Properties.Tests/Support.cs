using System.Runtime.CompilerServices;

namespace Harness.Properties.Tests;

internal static class Support
{
    /// <summary>The scratch-on-stack property records stores through the scheduling points: on for this test assembly.</summary>
    [ModuleInitializer]
    internal static void EnableSeams() => AppContext.SetSwitch(Harness.Smp.Control.Seams.PointsSwitch, true);
}
