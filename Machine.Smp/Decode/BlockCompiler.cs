using System.Reflection;
using System.Reflection.Emit;

namespace Harness.Smp.Decode;

/// <summary>
/// Compiles a hot block into one host method (IL through DynamicMethod) that runs its instructions
/// as a straight line of calls to their handlers. The interpreter loop calls every handler from one
/// indirect call site, whose target the host CPU mispredicts at almost every instruction; here each
/// instruction has its own call site with one target, and the loop's per-instruction bookkeeping
/// (pointer increment, bound test) is gone. The semantics are the interpreter's to the letter: the
/// same handlers in the same order, the faulting-instruction pointer set before each one (precise
/// faults), the block cut after a handler that asks for it (<see cref="Vcpu.BreakBlock"/>: a write
/// to decoded code, an event), guest time advanced once per block by the caller. A block is only run
/// compiled when the event budget covers all of it; otherwise the interpreter runs it.
/// </summary>
internal static unsafe class BlockCompiler
{
    /// <summary>Runs of a block through the interpreter before it is compiled.</summary>
    public const int HotThreshold = 32;

    private static readonly FieldInfo CurrentInsn = typeof(Vcpu).GetField("curInsn", BindingFlags.NonPublic | BindingFlags.Instance)
        ?? throw new InvalidOperationException("Vcpu.curInsn not found");
    private static readonly FieldInfo Break = typeof(Vcpu).GetField(nameof(Vcpu.BreakBlock), BindingFlags.NonPublic | BindingFlags.Instance)
        ?? throw new InvalidOperationException("Vcpu.BreakBlock not found");
    private static readonly Type[] HandlerParameters = [typeof(Vcpu), typeof(Insn).MakeByRefType()];

    /// <summary>
    /// The compiled block: returns how many instructions ran (all of them, or up to the one after which
    /// a handler cut the block). The instructions' addresses are constants in the code: the block's
    /// pinned array lives as long as the block, which holds the method.
    /// </summary>
    public static long CompiledCount, CompileTicks, Direct, Indirect;

    // Handler entry points to their methods, so a compiled block calls each directly (and the JIT
    // may inline it). Generic handlers are instantiated over every operation and size struct that
    // meets their constraints; a function pointer not found here is called indirectly.
    private static readonly Lazy<Dictionary<nint, MethodInfo>> Handlers = new(FindHandlers);

    private static Dictionary<nint, MethodInfo> FindHandlers()
    {
        var map = new Dictionary<nint, MethodInfo>();
        var asm = typeof(Vcpu).Assembly;
        var structs = asm.GetTypes().Where(t => t.IsValueType && !t.IsGenericTypeDefinition && t.Namespace == "Harness.Smp.Exec").ToArray();
        const BindingFlags all = BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly;
        foreach (var type in asm.GetTypes().Where(t => t.Namespace == "Harness.Smp.Exec"))
            foreach (var m in type.GetMethods(all))
            {
                var ps = m.GetParameters();
                if (m.ReturnType != typeof(void) || ps.Length != 2 || ps[0].ParameterType != typeof(Vcpu) || ps[1].ParameterType != HandlerParameters[1]) continue;
                if (!m.IsGenericMethodDefinition) { Add(m); continue; }
                var args = m.GetGenericArguments();
                var choices = args.Select(a => structs.Where(t => a.GetGenericParameterConstraints().All(c => c.IsAssignableFrom(t))).ToArray()).ToArray();
                foreach (var combo in Combinations(choices)) Add(m.MakeGenericMethod(combo));
            }
        return map;

        void Add(MethodInfo m) => map.TryAdd(m.MethodHandle.GetFunctionPointer(), m);
    }

    private static IEnumerable<Type[]> Combinations(Type[][] choices)
    {
        if (choices.Length == 0) { yield return []; yield break; }
        foreach (var first in choices[0])
            foreach (var rest in Combinations(choices[1..]))
                yield return [first, .. rest];
    }
    public static Func<Vcpu, int> Compile(Block block)
    {
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        try { return CompileCore(block); }
        finally { Interlocked.Increment(ref CompiledCount); Interlocked.Add(ref CompileTicks, System.Diagnostics.Stopwatch.GetTimestamp() - t0); }
    }

    private static Func<Vcpu, int> CompileCore(Block block)
    {
        var dm = new DynamicMethod($"block_{block.PhysStart:x}", typeof(int), [typeof(Vcpu)], typeof(Vcpu).Module, skipVisibility: true);
        var il = dm.GetILGenerator();
        for (int i = 0; i < block.Count; i++)
        {
            Insn* x = block.Ptr + i;
            il.Emit(OpCodes.Ldarg_0);
            il.Emit(OpCodes.Ldc_I8, (long)x);
            il.Emit(OpCodes.Conv_U);
            il.Emit(OpCodes.Stfld, CurrentInsn);
            il.Emit(OpCodes.Ldarg_0);
            il.Emit(OpCodes.Ldc_I8, (long)x);
            il.Emit(OpCodes.Conv_U);
            if (Handlers.Value.TryGetValue((nint)x->Exec, out var method)) { il.Emit(OpCodes.Call, method); Interlocked.Increment(ref Direct); }
            else
            {
                Interlocked.Increment(ref Indirect);
                il.Emit(OpCodes.Ldc_I8, (long)x->Exec);
                il.Emit(OpCodes.Conv_I);
                il.EmitCalli(OpCodes.Calli, CallingConventions.Standard, typeof(void), HandlerParameters, null);
            }
            if (i == block.Count - 1) break;
            var next = il.DefineLabel();
            il.Emit(OpCodes.Ldarg_0);
            il.Emit(OpCodes.Ldfld, Break);
            il.Emit(OpCodes.Brfalse, next);
            il.Emit(OpCodes.Ldc_I4, i + 1);
            il.Emit(OpCodes.Ret);
            il.MarkLabel(next);
        }
        il.Emit(OpCodes.Ldc_I4, block.Count);
        il.Emit(OpCodes.Ret);
        var f = dm.CreateDelegate<Func<Vcpu, int>>();
        System.Runtime.CompilerServices.RuntimeHelpers.PrepareDelegate(f);
        return f;
    }
}
