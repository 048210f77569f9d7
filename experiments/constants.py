"""Named constants of the experiments (not of the library): the graph generator's training schedules, the sha256
of each shared data file, the training of the embedding baseline."""

from __future__ import annotations

#: The reference implementation's two-stage schedule (joeybose/HyperbolicNF, graph generation): auto-encoder for
#: 50 epochs at Adam lr 1e-2, flow prior for 100 epochs at 1e-3, radius R = 2 (curvature k = R² = 4). Relative to
#: ``--epochs E --lr L`` (the command's defaults E = 100, L = 1e-2 give exactly those numbers): the auto-encoder
#: trains ``ceil(E · REFERENCE_AE_EPOCH_SHARE)`` epochs at ``L``, the flow ``E`` epochs at
#: ``L · REFERENCE_FLOW_LR_FACTOR``, so that short test runs keep the reference's proportions.
REFERENCE_AE_EPOCH_SHARE: float = 0.5
REFERENCE_FLOW_LR_FACTOR: float = 0.1
REFERENCE_RADIUS: float = 2.0
#: The paper's schedule as implemented here: both stages ``E`` epochs at ``L``, curvature fixed at k = 1.
PAPER_GENERATOR_CURVATURE: float = 1.0
SCHEDULES: tuple[str, ...] = ("paper", "reference")

#: sha256 of each file of ``shared/data`` (from its README's tables; path relative to the data root): a loader
#: refuses a file whose bytes differ (a damaged or edited copy would load silently as another graph), unless
#: ``--no-verify-data`` is given for a user's own modified copy
DATA_SHA256: dict[str, str] = {
    "planetoid/Cora/raw/ind.cora.allx":
        "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
    "planetoid/Cora/raw/ind.cora.ally":
        "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
    "planetoid/Cora/raw/ind.cora.graph":
        "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
    "planetoid/Cora/raw/ind.cora.test.index":
        "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
    "planetoid/Cora/raw/ind.cora.tx":
        "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
    "planetoid/Cora/raw/ind.cora.ty":
        "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
    "planetoid/Cora/raw/ind.cora.x":
        "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
    "planetoid/Cora/raw/ind.cora.y":
        "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
    "planetoid/CiteSeer/raw/ind.citeseer.allx":
        "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
    "planetoid/CiteSeer/raw/ind.citeseer.ally":
        "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
    "planetoid/CiteSeer/raw/ind.citeseer.graph":
        "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
    "planetoid/CiteSeer/raw/ind.citeseer.test.index":
        "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
    "planetoid/CiteSeer/raw/ind.citeseer.tx":
        "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
    "planetoid/CiteSeer/raw/ind.citeseer.ty":
        "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
    "planetoid/CiteSeer/raw/ind.citeseer.x":
        "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
    "planetoid/CiteSeer/raw/ind.citeseer.y":
        "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
    "planetoid/PubMed/raw/ind.pubmed.ally":
        "0c37bbe3b5014ec365e9d393cf4791925e5ed94fb194305d74f064a8d7b50f0e",
    "planetoid/PubMed/raw/ind.pubmed.graph":
        "5b89f0036ca22909471f1e6558eb42fa06e0c730a577bde5b058b40638f81dc9",
    "planetoid/PubMed/raw/ind.pubmed.test.index":
        "b101d421688bbaecbd82e8a18f1e282378d6830f3a37666f28ebc47f844341b5",
    "planetoid/PubMed/raw/ind.pubmed.tx":
        "4eb5f5d0f30f26497eb0ac6ac9719d09c67e284f1ed0385c93f3ef27a671da3d",
    "planetoid/PubMed/raw/ind.pubmed.ty":
        "ee2e0d4819d9fbcc403689c3bf2e49face401b605932f093bc58ab6461130fdd",
    "planetoid/PubMed/raw/ind.pubmed.x":
        "fbe9cb5c47200d1b7769a26e579be3b7130b556831f9d850e77c4c74f2599b33",
    "planetoid/PubMed/raw/ind.pubmed.y":
        "e6c807633307a07ed659249006536a147c7999c797f11a2560752990181b41b3",
    "hgcn/disease_lp/disease_lp.edges.csv":
        "b5b7e41bbfd28fc7f61590e5587622103ee9c3aa1b59911c74873a6f328dca07",
    "hgcn/disease_lp/disease_lp.feats.npz":
        "b4a726b13598c036a75e1b49f08e92820553b972966ad950b8d4d5416eb339f8",
    "hgcn/disease_lp/disease_lp.labels.npy":
        "8f2b26602764fbb785b93775d9f71194f1f36920e185af8bc5c31aea07dde858",
    "hgcn/disease_nc/disease_nc.edges.csv":
        "08b2dcf00db1e6a8f491af5294dee98197f1251a63bc9190d05fb4e77507782e",
    "hgcn/disease_nc/disease_nc.labels.npy":
        "70be7f91a854d924f3b7ac423615d75b1f9ee2506261c44113de27cc2caadd51",
    "hgcn/airport/airport.p":
        "ab16b04cea3666e87dbd8a5bff3de68da61330f4604fa21082f7a17e806e64d8",
    "hgcn/airport/airport_alldata.p":
        "1b449aa6962dd8dee23111c06a3327790dcc98054ce149393ee0e145f4069557",
    "hgcn/airport/routes.dat":
        "bd373706238134f619c624c606dccc74c05c2582a977c489c81de501735f2390",
    "wordnet_mammals/mammal_closure.csv":
        "9bf947ed2e7caef996ac10df58837160cb6966b633435a1c0bcf408311009cb4",
    "wordnet_mammals/WORDNET_LICENSE.txt":
        "c99e9fdf46ee011710b85f25d78370d2ed8d4ecead9ff7996310cb1b17ae0342",
    "hyperbolics_edges/bio-diseasome.edges":
        "c6f7e0846e0547b5eec989e0f8dff58f66acc4dd86c0af3e0c644981f6a4d80c",
    "hyperbolics_edges/bio-yeast.edges":
        "61cf2c6c55b90fa807da9cffdfcc986ab2c9c41f39f49be52554181ce8de4bc6",
    "hyperbolics_edges/ca-CSphd.edges":
        "26d761c07db457623c1e0be9644f62f188d376335a317b69b4de7f20e7c202ca",
    "hyperbolics_edges/grqc.edges":
        "d13468686616e12ffe5df5b76864ebcc256e25d6b61599ebca0cb510f77c36a9",
    "hyperbolics_edges/phylo_tree.edges":
        "e1b4607b0112a692e56ccd4dd5cd35cb3cebf4a45f907e0e8bbf788fe5f3499e",
    "mnist_t10k/t10k-images-idx3-ubyte.gz":
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "mnist_t10k/t10k-labels-idx1-ubyte.gz":
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

#: ``graph-recon --model embedding`` (Nickel & Kiela's ranking loss, geoopt's RiemannianAdam, full batch): the
#: learning rate, and a burn-in of ``EMBEDDING_BURN_IN_EPOCHS`` epochs at ``lr · EMBEDDING_BURN_IN_LR_FACTOR``
#: (Nickel & Kiela 2017, §3: 10 epochs at lr/10, for a better angular layout before the points move outwards).
#: Chosen on the validation edges of seed 0 of ``taxonomy-3`` (the main job's graph), 1000 epochs, Poincaré ball
#: R = 1, K = 10, validation AUC at the last epoch (without burn-in / with it): lr 1e-2 0.895 / 0.883, 3e-2
#: 0.914 / 0.928, 1e-1 0.853 / 0.894 (0.906 with 20 burn-in epochs), 3e-1 0.799 / -; the hyperboloid at 3e-2 with
#: burn-in 0.928, as the ball (the same model up to an isometry). The burn-in matters most at large rates.
EMBEDDING_LR: float = 3e-2
EMBEDDING_BURN_IN_EPOCHS: int = 10
EMBEDDING_BURN_IN_LR_FACTOR: float = 0.1
#: The embedding's curvature radius (``k = R²``, fixed): Nickel & Kiela's unit ball.
EMBEDDING_RADIUS: float = 1.0
