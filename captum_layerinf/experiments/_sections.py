"""The report's short guides: how to read each section of a disturbance study."""

GUIDES = {
    "summary": (
        "Each of the paper's findings, with the numbers of this run and whether it "
        "reproduces (the criterion is stated where the paper gives none). Read them as "
        "hypotheses to check against the sections below."
    ),
    "method": (
        "Which curvature the layer-wise and the global influence used, how the run was made "
        "reproducible, and the definitions that are ours where the paper leaves them open."
    ),
    "table1": (
        "Each test image is shown in four variants: original, on a white background (object "
        "only), with another class's texture transferred onto the object, and style-"
        "transferred (both built on the white-background image). The paper reports 'Top 5 "
        "probability values' without defining them further; our metric is the probability "
        "of the true class when it is among the five most probable classes, else 0, averaged "
        "with its standard error. A model that relies on the object keeps its accuracy on "
        "white backgrounds; one that relies on texture loses it on textured images."
    ),
    "table3": (
        "Left: a patch of pure texture, no shape. A texture-driven classifier names the class "
        "whose texture it is. Right: the textured variant puts class A's object in class B's "
        "texture: 'as texture' counts predictions of B, 'as content' predictions of A."
    ),
    "table2": (
        "The paper's Table 2: for each variant and class, the most influential training "
        "image among the training images of the test image's OWN class (intra-class, by the "
        "compound score I_total, the sum over layers), how the test images are classified, "
        "and the average influence score I_avg, the mean I_total over the class's training "
        "images. Scores are proponents when positive: removing them would raise the test loss."
    ),
    "gallery": (
        "The paper's Fig. 2: each row a test image (variant, true → predicted class) and its "
        "most influential training images of its own class by compound influence, with "
        "their scores."
    ),
    "ranges": (
        "Every test image's intra-class I_avg by class and variant, split into correct and "
        "incorrect predictions (the paper's Figs. 3 and 4). Red dotted: the median over all "
        "images (the mean of the two middle values for an even count); green and blue: the "
        "maximum and minimum."
    ),
    "interclass": (
        "The paper's Fig. 7: for each test class (panel), the I_avg of its test images over "
        "the training images of every OTHER class (x axis), coloured by variant; hollow "
        "markers are incorrect predictions. Red dotted: the panel's median; green and blue: "
        "its maximum and minimum."
    ),
    "clustering": (
        "The paper's Fig. 8, per class: each variant's vector of intra-class I_l_avg over the "
        "layers (the mean over the class's test images of that variant: our pooling), "
        "clustered with average linkage on Euclidean distances (four leaves), beside the "
        "Pearson correlation distance between the vectors. The paper finds original and "
        "white background in one cluster, styled and textured apart."
    ),
    "layers": (
        "The paper's Fig. 9, per class: the mean intra-class influence of each layer, one "
        "line per variant. The paper finds textured images peaking toward the last layers."
    ),
    "sweep": (
        "The paper's Fig. 6: one white-background test image given another class's texture "
        "at increasing strength (rows; our definition: the share s of the transfer loss "
        "(1 - s) content + s Gram, from 0 to 1) and transfer iterations (columns), with the "
        "model's probability of the true class and the intra-class influence."
    ),
    "shap": (
        "Test side: SHAP values of the test image's pixels for the predicted class (red raises "
        "the class score, blue lowers it). Training side: the most influential training images "
        "for the compound score and a few layers. Bidirectional reading: does the model look "
        "at the object, and are its proponents images of the same object or the same texture?"
    ),
    "additions": (
        "Not in the paper. The class of the most influential image over the WHOLE training "
        "set per layer, compound and global (where computed); I_avg and I_l_avg pooled over "
        "classes; the ratio of between- to within-variant variance of I_l_avg computed "
        "within each class; and all (class, variant) profiles clustered in one tree, which "
        "groups by class because influence magnitudes differ between classes."
    ),
}
