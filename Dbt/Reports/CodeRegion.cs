namespace Harness.Dbt;

/// <summary>What kind of code a cache address is (<see cref="Dbt.RegionAt"/>).</summary>
public enum CodeKind { Native, ExitStubPopfq, ExitStubJmp, Level2Routine, EdgeStub, EntryPath, Rule, DrkStub, Unknown }

/// <summary>
/// The code at one address, for reports, traces and coverage: its kind; for a rule's translation the
/// rule, the byte offset inside the translation of its native instruction and that translation's
/// length; for an entry path the offset and length of the block; for the level-2 routine the
/// offset in the stub page. Offset -1: none.
/// </summary>
public readonly record struct CodeRegion(CodeKind Kind, string? Rule = null, long Offset = -1, int Length = 0);
