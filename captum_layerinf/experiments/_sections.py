"""The report's short guides: how to read each section of a disturbance study."""

GUIDES = {
    "summary": (
        "What this run found, in numbers taken from the sections below. Read it as a "
        "hypothesis to check against the tables, not as a verdict."
    ),
    "table1": (
        "Each test image is shown in four variants: original, on a white background (object "
        "only), with another class's texture transferred onto the object, and style-"
        "transferred (both built on the white-background image). The top-5 probability is the "
        "probability of the true class when it is among the five most probable classes, else "
        "0, averaged with its standard error (the paper's Table 1). A model that relies on the "
        "object keeps its accuracy on white backgrounds; one that relies on texture loses it "
        "on textured images."
    ),
    "table3": (
        "Left: a patch of pure texture, no shape. A texture-driven classifier names the class "
        "whose texture it is. Right: the textured variant puts class A's object in class B's "
        "texture: 'as texture' counts predictions of B, 'as content' predictions of A."
    ),
    "gallery": (
        "Each row: a test image (variant, true → predicted class) and its most influential "
        "training images by compound influence (sum over layers), with their class and score. "
        "Positive scores are proponents: removing them would raise the test loss."
    ),
    "table2": (
        "For every layer, and for the compound and global (all-parameter) influence, the share "
        "of test images whose single most influential training image belongs to the true "
        "class, or to the class whose texture the image shows. For textured images a high "
        "'texture class' share means the training images that drive the decision are those "
        "with that texture. The per-image table lists the class per layer."
    ),
    "iavg": (
        "I_avg is the mean compound score of the training images of one class (intra: the "
        "test image's own class; inter: the others); I_l_avg the same per layer. Disturbed "
        "variants whose I_avg stays close to the original's rest on the same training "
        "evidence."
    ),
    "ranges": (
        "Every test image's intra-class I_avg by class and variant, split into correct and "
        "incorrect predictions (the paper's Figs. 3, 4 and 7). Red dotted: the median over all "
        "images; green and blue: the maximum and minimum."
    ),
    "layers": (
        "Mean intra-class influence of each layer per variant (the paper's Fig. 9), and for "
        "each layer the ratio of between-variant to within-variant variance: the layers with "
        "the largest ratio tell the variants apart."
    ),
    "clustering": (
        "Each (class, variant) group is described by its vector of intra-class I_l_avg over "
        "the layers. Average-linkage clustering on Euclidean distances (the paper's Fig. 8) "
        "and the Pearson correlation distance between the vectors: variants that cluster "
        "together are explained by the network through similar layers."
    ),
    "sweep": (
        "One white-background test image given another class's texture at increasing "
        "strength (rows: share of the loss given to the texture) and transfer iterations "
        "(columns), with the model's probability of the true class and the intra-class "
        "influence (the paper's Fig. 6)."
    ),
    "shap": (
        "Test side: SHAP values of the test image's pixels for the predicted class (red raises "
        "the class score, blue lowers it). Training side: the most influential training images "
        "for the compound score and a few layers. Bidirectional reading: does the model look "
        "at the object, and are its proponents images of the same object or the same texture?"
    ),
}
