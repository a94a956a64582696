import MambaEvaluation
import MambaModel
import MambaQuantization
import TestSupport
import XCTest

final class ErrorBudgetTests: XCTestCase {
    /// Every variant changes one thing against the baseline (or is a named combination), names are
    /// unique, and a site "alone" keeps every other module and scan input float.
    func testVariantsIsolateWhatTheySay() throws {
        for name in ["tiny-tied", "tiny-mamba2"] {
            let config = try MambaConfig.load(directory: Fixtures.model(name))
            let spec = config.mixer(layer: 0)
            let v = ErrorBudget.variants(method: .mambaquant, bits: BitWidths(weight: 8, activation: 8), config: config)
            XCTAssertEqual(Set(v.map(\.name)).count, v.count, name)
            XCTAssertEqual(v[0].recipe, QuantizationRecipe(method: .mambaquant))
            for variant in v { XCTAssertNoThrow(try QuantizedModel.checkKeepFloat(variant.recipe.keepFloat, config), variant.name) }
            let modules = spec.modules.map(\.name) + [QuantizedModel.lmHeadModule]
            for m in modules {
                let alone = try XCTUnwrap(v.first { $0.name == "only \(m)" }, m)
                XCTAssertFalse(alone.recipe.keepsFloat(module: "backbone.layers.0.mixer." + m) && m != QuantizedModel.lmHeadModule)
                for other in modules where other != m {
                    XCTAssertTrue(alone.recipe.keepsFloat(module: other == QuantizedModel.lmHeadModule ? other : "backbone.layers.1.mixer." + other), "\(m): \(other)")
                }
                for (site, _) in spec.scanInputs { XCTAssertTrue(alone.recipe.keepsFloat(scanInput: site), "\(m): \(site)") }
            }
            for (site, _) in spec.scanInputs {
                let alone = try XCTUnwrap(v.first { $0.name == "only " + QuantizationRecipe.scanInputName(site) })
                XCTAssertFalse(alone.recipe.keepsFloat(scanInput: site))
                XCTAssertTrue(alone.recipe.keepsFloat(module: "backbone.layers.0.mixer.in_proj"))
            }
            var accurate = QuantizationRecipe(method: .mambaquant)
            QuantizationProfile.accurate.apply(to: &accurate, config: config)
            accurate.profile = nil
            XCTAssertTrue(v.contains { $0.recipe == accurate }, "the accurate profile is one of the budget's rows")
        }
    }

    /// A module of every expert is one row: a 62-expert model must not budget 186 modules.
    func testExpertModulesAreOneRowEach() throws {
        let config = try MambaConfig.load(directory: Fixtures.model("tiny-granite-4.0-h-moe"))
        let rows = ErrorBudget.variants(method: .mambaquant, bits: BitWidths(weight: 8, activation: 8), config: config).map(\.name)
        XCTAssertTrue(rows.contains("only experts.*.input_linear") && rows.contains("only experts.*.output_linear"), "\(rows)")
        XCTAssertFalse(rows.contains { $0.contains("experts.0.") }, "\(rows)")
    }
}
